import type { NextFunction, Request, Response } from 'express';
import { emitKitEvent, hasKitListeners } from '../events';
import { sendThisTurn } from '../scripts';
import { createAdmin } from './admin';
import { type Pending, TurnBatches } from './batches';
import { createContext } from './context';
import { DenyCache } from './deny-cache';
import { createEntry } from './entry';
import { headerWriter } from './headers';
import type { ResolvedOptions } from './options';
import { createRefunds } from './refunds';
import { type Reply, replyWidth } from './reply';
import { createFailMode, sendDenied } from './responses';
import { MODE_CONSUME } from './script';
import { rank, SHOWS_INFO } from './standing';
import type { RateLimitInfo } from './types';

/**
 * The decision engine behind one `rateLimit()` middleware: everything that can be computed once is
 * computed here, so a request costs key building, its share of one EVALSHA and a few header writes.
 * Its parts: entry.ts (the app's skip/key/cost callbacks), this file (the decision: deny cache,
 * coalesced script calls, the answer), refunds.ts (giving costs back), admin.ts (reset/get).
 */
export function createLimiter(o: ResolvedOptions) {
  const { policies, name } = o;
  const ctx = createContext(o);
  const writeHeaders = headerWriter(o.headers, policies);
  const denyCache = o.denyCacheMax > 0 && !o.dryRun ? new DenyCache(o.denyCacheMax) : undefined;
  // Sliding-window log entries need a member unique across every app instance.
  const needsMember = policies.some((p) => p.algorithm === 'sliding-window');
  const failMode = createFailMode(o);
  // Responses that finish in the same turn give back in one call, like decisions.
  const refunds = createRefunds(o, ctx, denyCache, (key, refund) =>
    o.coalesce ? batches.refund(key, refund) : refunds.send(key, [refund]),
  );
  const batches = new TurnBatches(send, refunds.send, (sendAll) => sendThisTurn(o.redis, sendAll));
  const refundable = o.skipSuccessfulRequests || o.skipFailedRequests;

  function decide(req: Request, res: Response, next: NextFunction, key: string, cost: number): void {
    if (denyCache) {
      // Monotonic: a wall clock stepped back (NTP) would keep a client denied past its reset.
      const now = performance.now();
      const hit = denyCache.get(key, cost, now);
      if (hit) {
        const elapsed = now - hit.readAt;
        const info = ctx.infoAt(hit.reply as Reply, hit.binding, key, elapsed);
        const shown = tell(req, info, true);
        writeHeaders(res, hit.reply, hit.binding, elapsed, shown);
        if (hasKitListeners())
          emitKitEvent({ component: 'rate-limit', name, type: 'deny-cache-hit', key, policy: info.policy });
        sendDenied(o, req, res, next, info, hit.reply[4 + 3 * hit.binding]! - elapsed);
        return;
      }
    }
    const member = needsMember ? ctx.nextId() : '-';
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

  function send(key: string, batch: Pending[]): void {
    const keys = ctx.keysFor(key);
    const requests: Array<string | number> = [];
    for (const p of batch) requests.push(p.cost, p.member);
    const sent: Sent = {
      stamp: denyCache?.stamp() ?? 0,
      // Redis's waits count from when it decided, which is after this: a denial remembered from here
      // ends no later than Redis said, however late its reply is read.
      at: performance.now(),
    };
    ctx.call(keys, MODE_CONSUME, requests).then(
      (reply) => {
        failMode.recovered(keys[0]!);
        const width = replyWidth(ctx.count);
        for (let i = 0; i < batch.length; i++) {
          const p = batch[i]!;
          // One request's trouble (a header write after another middleware answered…) must not
          // strand the rest of the batch: it goes to that request's error handler.
          try {
            settle(p, batch.length === 1 ? reply : reply.slice(i * width, (i + 1) * width), sent);
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

  function settle(p: Pending, reply: Reply, sent: Sent): void {
    const { req, res, next, key, cost } = p;
    const allowed = reply[0] === 1;
    const b = ctx.bindingIn(reply, allowed);
    const info = ctx.infoAt(reply, b, key, 0);
    const shown = tell(req, info, !allowed);
    // Before the header write, which throws when another middleware already answered: such a
    // request is counted all the same, and its refund must not be lost with the throw.
    if (allowed && refundable) refunds.later(req, res, key, cost, p.member, reply, sent.at);
    writeHeaders(res, reply, b, 0, shown);
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
    // Redis counts in whole ms (its now rounded down), so its wait may be up to 1 ms more than the
    // truth: remembered 1 ms shorter, the denial still ends no later than Redis's.
    denyCache?.set(
      key,
      { until: sent.at + retryMs - 1, cost, reply, binding: b, readAt: performance.now() },
      sent.stamp,
    );
    sendDenied(o, req, res, next, info, retryMs);
  }

  /**
   * Sets `req.rateLimit`, unless another limiter that decided this request before (two `rateLimit()`
   * on one route) outranks this one (standing.ts); returns standing.ts's bits for the headers.
   */
  function tell(req: Request, info: RateLimitInfo, denied: boolean): number {
    const shown = rank(req, info.remaining, denied, o.dryRun, o.headers);
    if (shown & SHOWS_INFO) req.rateLimit = info;
    return shown;
  }

  return { rateLimitMiddleware: createEntry(o, decide), ...createAdmin(o, ctx, denyCache) };
}

/** When a decision call left: the deny cache's stamp and `performance.now()`. */
interface Sent {
  stamp: number;
  at: number;
}
