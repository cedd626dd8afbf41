import type { Request, Response } from 'express';
import onFinished from 'on-finished';
import { onResponseOver } from '../connection-close';
import { emitKitEvent } from '../events';
import { guarded } from '../guarded';
import { isHeld, whenReleased } from '../late-answers';
import { beginWork } from '../pending-work';
import { runScript } from '../scripts';
import type { Refund } from './batches';
import type { LimiterContext } from './context';
import type { DenyCache } from './deny-cache';
import type { ResolvedOptions } from './options';
import { type Reply, refundHints } from './reply';
import { MODE_REFUND, rateLimitScript } from './script';
import { isThenable } from './user-call';

/**
 * skipSuccessfulRequests / skipFailedRequests: gives a counted request's cost back once its
 * response is over and judged. `queue` sends a refund on (coalesced with others of the same turn, or
 * at once); `send` is the script call.
 */
export function createRefunds(
  o: ResolvedOptions,
  ctx: LimiterContext,
  denyCache: DenyCache | undefined,
  queue: (key: string, refund: Refund) => void,
) {
  const { redis, name } = o;
  const script = rateLimitScript(ctx.count, true);

  /** Waits for `res` to be over, then gives the request back if the options say so. */
  function later(
    req: Request,
    res: Response,
    key: string,
    cost: number,
    member: string,
    reply: Reply,
    countSentAt: number,
  ): void {
    const origin = reply[1]!;
    const hints = refundHints(reply, ctx.count);
    // Runs from a response event, where a throw (or an unhandled rejection) would take the process
    // down. Unknown outcome: keep the cost counted, the side that can never let more through.
    const unjudged = (error: unknown) =>
      emitKitEvent({
        component: 'rate-limit',
        name,
        type: 'refund-failed',
        key,
        cost,
        error: error as Error,
      });
    const settle = () => {
      let ok: unknown;
      try {
        ok = o.requestWasSuccessful(req, res);
      } catch (error) {
        return unjudged(error);
      }
      // express-rate-limit awaits it: a Promise is an answer to come, not "successful".
      if (isThenable(ok)) {
        // The refund it may lead to is the kit's work on the client: closeRedis waits for it, but
        // for no longer than a Redis call may take (a judge that never settles keeps nothing open).
        const endWork = beginWork(redis);
        const bound = setTimeout(endWork, o.timeoutMs);
        bound.unref?.();
        Promise.resolve(ok)
          .then((value) => judged(Boolean(value)), unjudged)
          .finally(() => {
            clearTimeout(bound);
            endWork();
          });
        return;
      }
      judged(Boolean(ok));
    };
    const judged = (ok: boolean) => {
      if (ok ? !o.skipSuccessfulRequests : !o.skipFailedRequests) return;
      // A denial remembered here may no longer hold once the quota comes back: forget it now, so no
      // request is answered from memory before the refund leaves, and do not remember denials from
      // calls already on their way (sent before the refund, answered without it).
      denyCache?.forget(key);
      queue(key, { cost, member, origin, countSentAt, hints });
    };
    // onResponseOver (on-finished, Express's own, or for a pipelined answer its connection's close)
    // calls back once the response is over, also when it already was
    // (the client left while Redis was deciding, or a timeout middleware replied), and keeps one
    // set of listeners per response however many limiters wait on it. An answer the app ended is
    // judged by requestWasSuccessful, delivered or not. A client that broke off before the answer
    // keeps its cost counted, whatever the handler answers later: it is still at work, and breaking
    // off must not be a way to make requests for free (skipFailedRequests). Judged now, when the
    // client already left: on-finished calls back a turn later, after next() has let a synchronous
    // handler end the response (a validation error, a cached answer).
    // An answer the kit holds (idempotency storing it, redisSession saving) was ended by the app,
    // and is judged as it goes out once released: a layer may put a 503 in its place, and status
    // changes made during the hold are undone (a client that leaves meanwhile changes neither).
    if (!res.writableEnded && !isHeld(res) && onFinished.isFinished(res)) return;
    onResponseOver(res, () => {
      if (isHeld(res)) whenReleased(res, settle);
      else if (res.writableEnded) settle();
    });
  }

  /** One refund call for a client's batch. */
  function send(key: string, batch: Refund[]): void {
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
    const keys = ctx.keysFor(key);
    keys.push(ctx.extraKey(key, `x:${ctx.nextId()}`));
    const deadline = Math.floor(redisNow) + o.timeoutMs;
    const failed = (error: Error) => {
      for (const r of batch)
        emitKitEvent({ component: 'rate-limit', name, type: 'refund-failed', key, cost: r.cost, error });
    };
    guarded(
      redis,
      () => runScript<Reply>(redis, script, keys, [MODE_REFUND, ...ctx.policyArgs, deadline, ...requests]),
      { ...ctx.guard, key: keys[0] },
    ).then((reply) => {
      if (reply[0] !== 1) {
        failed(new Error('express-redis-kit rateLimit: the refund reached Redis after its deadline'));
        return;
      }
      for (const r of batch)
        emitKitEvent({ component: 'rate-limit', name, type: 'refund', key, cost: r.cost });
    }, failed);
  }

  return { later, send };
}
