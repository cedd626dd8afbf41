import type { RequestHandler } from 'express';
import { benchApp, kitExport } from './app';
import { redisGet } from './baseline';
import { expressRateLimitRedis, flexibleRedis, type Quota } from './rate-limit-peers';
import type { Group, Scenario } from './types';

const QUOTA: Quota = { limit: 1_000_000_000, windowSeconds: 3600 };
const ALGORITHMS = ['fixed-window', 'sliding-window', 'token-bucket', 'gcra'] as const;

type RateLimitFactory = (options: Record<string, unknown>) => RequestHandler;

function kit(algorithm: (typeof ALGORITHMS)[number]): Scenario {
  return {
    id: `rate-limit/${algorithm}`,
    label: `rateLimit ${algorithm}`,
    kind: 'kit',
    peer: 'rate-limit/flexible',
    expect: { commandsPerRequest: 1, minVsBare: 0.97, minVs: { scenario: 'rate-limit/flexible', ratio: 1 } },
    build: async (ctx) => {
      const rateLimit = kitExport<RateLimitFactory>('rate-limit', 'rateLimit');
      const limiter = rateLimit({
        redis: ctx.redis(),
        limit: QUOTA.limit,
        window: QUOTA.windowSeconds * 1000,
        algorithm,
        prefix: ctx.prefix,
      });
      return { app: benchApp({ use: [limiter] }) };
    },
  };
}

export const rateLimitGroup: Group = {
  id: 'rate-limit',
  title: 'Rate limiting, nothing denied',
  note: `Limit ${QUOTA.limit.toLocaleString('en-US')} per ${QUOTA.windowSeconds} s; one client key (127.0.0.1).`,
  references: [redisGet],
  scenarios: [
    ...ALGORITHMS.map(kit),
    {
      id: 'rate-limit/express-rate-limit',
      label: 'express-rate-limit + rate-limit-redis',
      kind: 'peer',
      build: async (ctx) => ({ app: benchApp({ use: [expressRateLimitRedis(ctx, QUOTA)] }) }),
    },
    {
      id: 'rate-limit/flexible',
      label: 'rate-limiter-flexible RateLimiterRedis',
      kind: 'peer',
      build: async (ctx) => ({ app: benchApp({ use: [flexibleRedis(ctx, QUOTA)] }) }),
    },
  ],
};
