import type { RequestHandler } from 'express';
import type { RedisReply } from 'rate-limit-redis';
import { peer } from './app';
import type { ServerContext } from './types';

/** Same quota for every limiter of a group. */
export interface Quota {
  limit: number;
  windowSeconds: number;
}

/** express-rate-limit + rate-limit-redis, wired as their READMEs show for ioredis. */
export function expressRateLimitRedis(ctx: ServerContext, quota: Quota): RequestHandler {
  const { rateLimit } = peer<typeof import('express-rate-limit')>('express-rate-limit');
  const { RedisStore } = peer<typeof import('rate-limit-redis')>('rate-limit-redis');
  const redis = ctx.redis();
  return rateLimit({
    windowMs: quota.windowSeconds * 1000,
    limit: quota.limit,
    standardHeaders: 'draft-8',
    legacyHeaders: false,
    store: new RedisStore({
      prefix: ctx.prefix,
      sendCommand: (command: string, ...args: string[]) =>
        redis.call(command, ...args) as Promise<RedisReply>,
    }),
  });
}

/** rate-limiter-flexible's RateLimiterRedis behind the usual hand-written middleware. */
export function flexibleRedis(
  ctx: ServerContext,
  quota: Quota,
  extra: { inMemoryBlockOnConsumed?: number; inMemoryBlockDuration?: number } = {},
): RequestHandler {
  const { RateLimiterRedis, RateLimiterRes } =
    peer<typeof import('rate-limiter-flexible')>('rate-limiter-flexible');
  const limiter = new RateLimiterRedis({
    storeClient: ctx.redis(),
    keyPrefix: ctx.prefix,
    points: quota.limit,
    duration: quota.windowSeconds,
    ...extra,
  });
  return function rateLimiterFlexible(req, res, next) {
    limiter.consume(req.ip ?? 'unknown').then(
      () => next(),
      (rejection: unknown) => {
        if (rejection instanceof RateLimiterRes) res.status(429).send('Too Many Requests');
        else next(rejection);
      },
    );
  };
}
