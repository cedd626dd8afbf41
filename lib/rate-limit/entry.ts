import type { NextFunction, Request, Response } from 'express';
import { refreshTicketOf } from '../cache/refresh';
import { shown } from '../errors';
import { emitKitEvent, hasKitListeners } from '../events';
import { createCustomKeyGrouper, createDefaultKey } from './client-key';
import type { ResolvedOptions } from './options';
import { callUser } from './user-call';

type Decide = (req: Request, res: Response, next: NextFunction, key: string, cost: number) => void;

/**
 * The middleware's way in: the app's `skip`, `key` and `cost` callbacks (each may be async, throw
 * or answer nonsense), checked per request before the decision.
 */
export function createEntry(o: ResolvedOptions, decide: Decide) {
  const keyOf = o.key ?? createDefaultKey(o.ipv6Subnet, (m) => o.logger.warn(m));
  // The default key groups IPv6 itself; a custom one returning req.ip must be grouped the same way.
  const groupCustom = o.key ? createCustomKeyGrouper(o.ipv6Subnet) : undefined;

  function withKey(req: Request, res: Response, next: NextFunction, returned: unknown): void {
    // A numeric user id (`req.user.id`) is a key like its text, as reset(42) already takes it.
    const text = typeof returned === 'number' && Number.isFinite(returned) ? String(returned) : returned;
    if (typeof text !== 'string' || text === '') {
      next(
        new TypeError(
          `express-redis-kit rateLimit: option "key" must return a non-empty string or a finite number; got ${shown(returned)}.`,
        ),
      );
      return;
    }
    const key = groupCustom ? groupCustom(text) : text;
    if (typeof o.cost === 'number') {
      decide(req, res, next, key, o.cost);
      return;
    }
    const userCost = o.cost;
    const withCost = (c: unknown) => {
      if (typeof c !== 'number' || !Number.isInteger(c) || c < 1) {
        // As everywhere in the kit: the wrong type is a TypeError, a number out of range a RangeError.
        const WrongCost = typeof c === 'number' ? RangeError : TypeError;
        next(
          new WrongCost(
            `express-redis-kit rateLimit: option "cost" must return a whole number >= 1; got ${shown(c)}.`,
          ),
        );
        return;
      }
      // Such a request could never pass; counting it would only mislead (a Retry-After that never
      // comes true) and huge values would not survive the trip through Lua's doubles.
      if (c > o.maxCost) {
        // A dry run never blocks: such a request is reported as denied and goes on.
        if (o.dryRun) {
          if (hasKitListeners())
            emitKitEvent({
              component: 'rate-limit',
              name: o.name,
              type: 'denied',
              key,
              cost: c,
              dryRun: true,
            });
          next();
          return;
        }
        next(
          new RangeError(
            `express-redis-kit rateLimit: option "cost" returned ${c}, more than the limit (${o.maxCost}); such a request could never pass. Cap the cost, or answer the request yourself before the limiter.`,
          ),
        );
        return;
      }
      decide(req, res, next, key, c);
    };
    callUser(() => userCost(req, res), withCost, next);
  }

  // One limiter reached twice by the same request (mounted on the app and again on a router) would
  // count it twice: a 4-per-hour limit would let 2 through. It decides once; the second pass goes on.
  const decided = Symbol('rateLimit decided');
  let warnedTwice = false;

  function start(req: Request, res: Response, next: NextFunction): void {
    const marks = req as unknown as Record<symbol, true | undefined>;
    if (marks[decided]) {
      if (!warnedTwice) {
        warnedTwice = true;
        o.logger.warn(
          `express-redis-kit rateLimit${o.name ? ` "${o.name}"` : ''}: one request reached this limiter twice (mounted on the app and again on a router or route?); it is counted once. Mount it once, or make a second rateLimit() for a second limit. (Logged once.)`,
        );
      }
      next();
      return;
    }
    marks[decided] = true;
    callUser(
      () => keyOf(req, res),
      (key) => withKey(req, res, next, key),
      next,
    );
  }

  return function rateLimitMiddleware(req: Request, res: Response, next: NextFunction): void {
    // A cache's background refresh replays a client's request through the app: the client did not
    // ask for it, and must not pay for it.
    if (refreshTicketOf(req)) {
      next();
      return;
    }
    const skip = o.skip;
    if (!skip) {
      start(req, res, next);
      return;
    }
    callUser(
      () => skip(req, res),
      (skipped) => (skipped ? next() : start(req, res, next)),
      next,
    );
  };
}
