import type { NextFunction, Request, Response } from 'express';
import onFinished from 'on-finished';
import { guarded } from '../breaker';
import { shown } from '../errors';
import { emitKitEvent, hasKitListeners } from '../events';
import { safePart } from '../keys';
import { runScript } from '../scripts';
import { type Pending, type Refund, TurnBatches } from './batches';
import { createDefaultKey, createIpGrouper } from './client-key';
import { DenyCache } from './deny-cache';
import { headerWriter } from './headers';
import type { ResolvedOptions } from './options';
import { bindingOf, infoOf, type Reply, refundHints, replyWidth } from './reply';
import { createFailMode, sendDenied } from './responses';
import { MODE_CONSUME, MODE_PEEK, MODE_REFUND, rateLimitScript } from './script';
import type { RateLimitInfo, RateLimitState } from './types';
import { callUser } from './user-call';

/**
 * The decision engine behind one `rateLimit()` middleware: everything that can be computed once is
 * computed here, so a request costs key building, its share of one EVALSHA and a few header writes.
 */
export function createLimiter(o: ResolvedOptions) {
  const { redis, policies, name } = o;
  const count = policies.length;
  const script = rateLimitScript(count);
  const refundScript = rateLimitScript(count, true);
  const guard = { timeoutMs: o.timeoutMs, component: 'rate-limit' as const, name };
  const adminGuard = { ...guard, timeoutMs: Math.max(o.timeoutMs, 2000) };
  const writeHeaders = headerWriter(o.headers, policies);
  const denyCache = o.denyCacheMax > 0 && !o.dryRun ? new DenyCache(o.denyCacheMax) : undefined;
  const keyOf = o.key ?? createDefaultKey(o.ipv6Subnet, (m) => o.logger.warn(m));
  const normalizeAdminKey = o.key ? (k: string) => k : createIpGrouper(o.ipv6Subnet);
  const refunds = o.skipSuccessfulRequests || o.skipFailedRequests;
  // Sliding-window log entries need a member unique across every app instance.
  const needsMember = policies.some((p) => p.algorithm === 'sliding-window');
  const memberBase = `${process.pid.toString(36)}.${Math.random().toString(36).slice(2, 8)}.`;
  let sequence = 0;
  // Per-policy ARGV tail never changes: precompute it and copy it into each call's args.
  const policyArgs: Array<string | number> = [];
  for (const p of policies) policyArgs.push(p.code, p.limit, p.windowMs);
  const failMode = createFailMode(o);
  const batches = new TurnBatches(send, sendRefunds);

  const keysFor = (clientKey: string): string[] => {
    const tag = safePart(clientKey);
    if (count === 1) return [o.keyHead + tag + policies[0]!.keyTail];
    const keys = new Array<string>(count);
    for (let i = 0; i < count; i++) keys[i] = o.keyHead + tag + policies[i]!.keyTail;
    return keys;
  };

  /**
   * One script call: `requests` is a flat list of (cost, member) pairs, answered in order; for
   * refunds, (cost, member, origin, one hint per policy).
   */
  const call = (keys: string[], mode: string, requests: Array<string | number>, admin = false) =>
    guarded(redis, () => runScript<Reply>(redis, script, keys, [mode, ...policyArgs, ...requests]), {
      ...(admin ? adminGuard : guard),
      key: keys[0],
    });

  const bindingIn = (reply: Reply, allowed: boolean) => (count === 1 ? 0 : bindingOf(reply, count, allowed));
  const infoAt = (reply: Reply, b: number, key: string, elapsed: number): RateLimitInfo =>
    infoOf(reply, policies[b]!, b, key, elapsed);
  const deny = (req: Request, res: Response, next: NextFunction, denied: RateLimitInfo, retryMs: number) =>
    sendDenied(o, req, res, next, denied, retryMs);

  function refundLater(
    req: Request,
    res: Response,
    key: string,
    cost: number,
    member: string,
    reply: Reply,
    countSentAt: number,
  ) {
    const origin = reply[1]!;
    const hints = refundHints(reply, count);
    const settle = () => {
      let ok: boolean;
      try {
        ok = o.requestWasSuccessful(req, res);
      } catch (error) {
        // Runs from a response event, where a throw would take the process down. Unknown outcome:
        // keep the cost counted, the side that can never let more through.
        emitKitEvent({
          component: 'rate-limit',
          name,
          type: 'refund-failed',
          key,
          cost,
          error: error as Error,
        });
        return;
      }
      if (ok ? !o.skipSuccessfulRequests : !o.skipFailedRequests) return;
      const refund: Refund = { cost, member, origin, countSentAt, hints };
      // A denial remembered here may no longer hold once the quota comes back: forget it now, so no
      // request is answered from memory before the refund leaves, and do not remember denials from
      // calls already on their way (sent before the refund, answered without it).
      denyCache?.forget(key);
      if (!o.coalesce) return sendRefunds(key, [refund]);
      // Responses that finish in the same turn give back in one call, like decisions.
      batches.refund(key, refund);
    };
    // on-finished (Express's own) calls back once the response is over, also when it already was
    // (the client left while Redis was deciding, or a timeout middleware replied), and keeps one
    // set of listeners per response however many limiters wait on it. An answer the app ended is
    // judged by requestWasSuccessful, delivered or not. A client that broke off before the answer
    // keeps its cost counted, whatever the handler answers later: it is still at work, and breaking
    // off must not be a way to make requests for free (skipFailedRequests).
    onFinished(res, () => {
      if (res.writableEnded) settle();
    });
  }

  function decide(req: Request, res: Response, next: NextFunction, key: string, cost: number): void {
    if (denyCache) {
      const now = Date.now();
      const hit = denyCache.get(key, cost, now);
      if (hit) {
        const elapsed = now - hit.at;
        const info = infoAt(hit.reply as Reply, hit.binding, key, elapsed);
        req.rateLimit = info;
        writeHeaders(res, hit.reply, hit.binding, elapsed);
        if (hasKitListeners())
          emitKitEvent({ component: 'rate-limit', name, type: 'deny-cache-hit', key, policy: info.policy });
        deny(req, res, next, info, hit.until - now);
        return;
      }
    }
    const member = needsMember ? memberBase + (++sequence).toString(36) : '-';
    const pending: Pending = { req, res, next, key, cost, member };
    if (!o.coalesce) {
      send(key, [pending]);
      return;
    }
    // Decisions for the same client made in one turn of the event loop go to Redis as one script
    // call, answered in arrival order: the same result as one call each, for a fraction of the cost
    // on both sides. The flush runs right after this turn's I/O callbacks, so nobody waits longer.
    batches.decide(key, pending);
  }

  function sendRefunds(key: string, batch: Refund[]): void {
    // The call applies only until the limiter stops waiting for it, and once (see script.ts): what
    // ioredis sends again after a lost reply, or delivers after its timeout, cannot give back twice
    // or after being reported failed. Redis time now is read from the counts: at least as much time
    // has passed since a count was sent as since Redis ran it, so this errs late (by the count's
    // trip there), never early, whatever delayed reading its reply (a busy event loop).
    const sentAt = performance.now();
    let redisNow = 0;
    const requests: Array<string | number> = [];
    for (const r of batch) {
      redisNow = Math.max(redisNow, r.origin + (sentAt - r.countSentAt));
      requests.push(r.cost, r.member, r.origin, ...r.hints);
    }
    const keys = keysFor(key);
    keys.push(`${o.keyHead}${safePart(key)}}:x:${memberBase}${(++sequence).toString(36)}`);
    const deadline = Math.floor(redisNow) + o.timeoutMs;
    const failed = (error: Error) => {
      for (const r of batch)
        emitKitEvent({ component: 'rate-limit', name, type: 'refund-failed', key, cost: r.cost, error });
    };
    guarded(
      redis,
      () => runScript<Reply>(redis, refundScript, keys, [MODE_REFUND, ...policyArgs, deadline, ...requests]),
      { ...guard, key: keys[0] },
    ).then((reply) => {
      if (reply[0] !== 1) {
        failed(new Error('express-redis-kit rateLimit: the refund reached Redis after its deadline'));
        return;
      }
      for (const r of batch)
        emitKitEvent({ component: 'rate-limit', name, type: 'refund', key, cost: r.cost });
    }, failed);
  }

  function send(key: string, batch: Pending[]): void {
    const keys = keysFor(key);
    const requests: Array<string | number> = [];
    for (const p of batch) requests.push(p.cost, p.member);
    const sentAt = denyCache?.stamp() ?? 0;
    const countSentAt = performance.now();
    // Redis's waits count from when it decided, which is after this: a denial remembered from here
    // ends no later than Redis said, however late its reply is read.
    const sentWall = Date.now();
    call(keys, MODE_CONSUME, requests).then(
      (reply) => {
        failMode.recovered(keys[0]!);
        const width = replyWidth(count);
        for (let i = 0; i < batch.length; i++) {
          const p = batch[i]!;
          // One request's trouble (a header write after another middleware answered…) must not
          // strand the rest of the batch: it goes to that request's error handler.
          try {
            settle(
              p,
              batch.length === 1 ? reply : reply.slice(i * width, (i + 1) * width),
              sentAt,
              countSentAt,
              sentWall,
            );
          } catch (error) {
            p.next(error);
          }
        }
      },
      (error: unknown) => {
        for (const p of batch) {
          try {
            failMode.fail(error, keys[0]!, p.res, p.next);
          } catch (failure) {
            p.next(failure);
          }
        }
      },
    );
  }

  function settle(p: Pending, reply: Reply, sentAt: number, countSentAt: number, sentWall: number): void {
    const { req, res, next, key, cost } = p;
    const allowed = reply[0] === 1;
    const b = bindingIn(reply, allowed);
    const info = infoAt(reply, b, key, 0);
    req.rateLimit = info;
    // Before the header write, which throws when another middleware already answered: such a
    // request is counted all the same, and its refund must not be lost with the throw.
    if (allowed && refunds) refundLater(req, res, key, cost, p.member, reply, countSentAt);
    writeHeaders(res, reply, b, 0);
    if (allowed) {
      if (hasKitListeners())
        emitKitEvent({ component: 'rate-limit', name, type: 'allowed', key, policy: info.policy, cost });
      next();
      return;
    }
    const retryMs = reply[4 + 3 * b]!;
    if (hasKitListeners()) {
      emitKitEvent({
        component: 'rate-limit',
        name,
        type: 'denied',
        key,
        policy: info.policy,
        cost,
        dryRun: o.dryRun,
      });
    }
    if (o.dryRun) {
      next();
      return;
    }
    // A refund or reset() for this client sent after this call may have changed the answer by now:
    // the denial stands for this request, but the cache keeps it only if nothing did.
    denyCache?.set(key, { until: sentWall + retryMs, cost, reply, binding: b, at: sentWall }, sentAt);
    deny(req, res, next, info, retryMs);
  }

  function withKey(req: Request, res: Response, next: NextFunction, key: unknown): void {
    if (typeof key !== 'string' || key === '') {
      next(
        new TypeError(
          `express-redis-kit rateLimit: option "key" must return a non-empty string; got ${shown(key)}.`,
        ),
      );
      return;
    }
    if (typeof o.cost === 'number') {
      decide(req, res, next, key, o.cost);
      return;
    }
    const userCost = o.cost;
    const withCost = (c: unknown) => {
      if (typeof c !== 'number' || !Number.isInteger(c) || c < 1) {
        next(
          new TypeError(
            `express-redis-kit rateLimit: option "cost" must return a whole number >= 1; got ${shown(c)}.`,
          ),
        );
        return;
      }
      // Such a request could never pass; counting it would only mislead (a Retry-After that never
      // comes true) and huge values would not survive the trip through Lua's doubles.
      if (c > o.maxCost) {
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

  function start(req: Request, res: Response, next: NextFunction): void {
    callUser(
      () => keyOf(req, res),
      (key) => withKey(req, res, next, key),
      next,
    );
  }

  function rateLimitMiddleware(req: Request, res: Response, next: NextFunction): void {
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
  }

  /** Forgets everything about `key` (as in `req.rateLimit.key`; raw IPs are grouped like requests). */
  async function reset(key: string): Promise<void> {
    const clientKey = normalizeAdminKey(String(key));
    // Denials sent before the DEL come back after this point: they must not be remembered.
    denyCache?.forget(clientKey);
    const keys = keysFor(clientKey);
    await guarded(redis, () => redis.del(...keys), { ...adminGuard, key: keys[0] });
  }

  /** Reads `key`'s state without counting anything. */
  async function get(key: string): Promise<RateLimitState> {
    const clientKey = normalizeAdminKey(String(key));
    const reply = await call(keysFor(clientKey), MODE_PEEK, [0, '-'], true);
    const b = bindingIn(reply, true);
    return {
      ...infoAt(reply, b, clientKey, 0),
      policies: policies.map((p, i) => ({
        policy: p.name,
        limit: p.limit,
        remaining: reply[2 + 3 * i]!,
        used: p.limit - reply[2 + 3 * i]!,
        resetMs: reply[3 + 3 * i]!,
      })),
    };
  }

  return { rateLimitMiddleware, reset, get };
}
