import { STATUS_CODES } from 'node:http';
import type { NextFunction, Request, Response } from 'express';
import { problemType, RedisRefusedError, RedisUnavailableError, sendProblem } from '../errors';
import { emitKitEvent } from '../events';
import { nodeField, OutageTracker } from '../outage';
import type { ResolvedOptions } from './options';
import type { DeniedInfo, RateLimitInfo } from './types';
import { callUser } from './user-call';

/** Answers a denied request: `Retry-After`, then the user's `handler` or a problem+json body. */
export function sendDenied(
  o: ResolvedOptions,
  req: Request,
  res: Response,
  next: NextFunction,
  info: RateLimitInfo,
  retryMs: number,
): void {
  const retryAfter = Math.max(1, Math.ceil(retryMs / 1000));
  res.setHeader('Retry-After', String(retryAfter));
  const message = o.message ?? `Rate limit "${info.policy}" exceeded. Retry in ${retryAfter} s.`;
  if (o.handler) {
    const handler = o.handler;
    const denied = { ...info, retryAfter, statusCode: o.statusCode, message } satisfies DeniedInfo;
    // An async handler (common with Express 5) that rejects goes to the error handler, like a throw.
    callUser(
      () => handler(req, res, next, denied) as unknown,
      () => {},
      next,
    );
    return;
  }
  sendProblem(res, {
    type: problemType('rate-limited'),
    title: STATUS_CODES[o.statusCode] ?? 'Too Many Requests',
    status: o.statusCode,
    detail: message,
    policy: info.policy,
    retryAfter,
  });
}

/**
 * The fail mode when Redis cannot decide: lets the request through (`open`) or answers 503. Warns
 * once per outage, not once per request; `recovered()` ends the outage when the node that failed
 * answers again. On a Cluster each master has its own outage: one dead shard warns once, however
 * many requests the healthy ones serve in between.
 */
export function createFailMode(o: ResolvedOptions) {
  const { name } = o;
  const outages = new OutageTracker(o.redis);
  // A dry run never blocks: it is how limits are tried in production with the fail mode they will
  // enforce later, and a Redis blip must not turn it into 503s for everyone.
  const open = o.failMode === 'open' || o.dryRun;

  /** `redisKey`: a key of the failed call, naming the node that failed. */
  function fail(error: unknown, redisKey: string, res: Response, next: NextFunction): void {
    const started = outages.begin(redisKey);
    if (started !== undefined) {
      const node = nodeField(started);
      // A refused call (WRONGTYPE on a key the app overwrote, a script error) is not an outage: say so.
      const what =
        error instanceof RedisUnavailableError && !(error instanceof RedisRefusedError)
          ? 'unavailable'
          : 'refused the rate-limit call';
      o.logger.warn(
        `express-redis-kit rateLimit${name ? ` "${name}"` : ''}: Redis${node ? ` node ${node}` : ''} ${what} (${(error as Error)?.message ?? error}); ` +
          `failing ${open ? 'open' : 'closed'} (${open ? `requests pass unchecked${o.dryRun ? ', as in every dry run' : ''}` : 'requests get 503'}) until a call succeeds again.`,
      );
    }
    emitKitEvent({
      component: 'rate-limit',
      name,
      type: open ? 'fail-open' : 'fail-closed',
      error: error as Error,
    });
    if (open) {
      next();
      return;
    }
    sendProblem(
      res,
      {
        type: problemType('rate-limit-unavailable'),
        title: 'Service Unavailable',
        status: 503,
        detail: 'The rate limiter cannot reach its store, so the request was refused. Retry shortly.',
      },
      { 'Retry-After': '1' },
    );
  }

  function recovered(redisKey: string): void {
    for (const id of outages.end(redisKey))
      emitKitEvent({ component: 'rate-limit', name, type: 'recovered', node: nodeField(id) });
  }

  return { fail, recovered };
}
