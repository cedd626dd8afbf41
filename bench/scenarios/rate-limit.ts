import type { RequestHandler } from 'express';
import { benchApp, kitExport } from './app';
import { redisGet } from './baseline';
import { expressRateLimitRedis, flexibleRedis, type Quota } from './rate-limit-peers';
import type { Group, Scenario } from './types';

// 10,000 per second on average: far above what one client sends here, and the most gcra allows
// (window / limit >= 100 µs).
const QUOTA: Quota = { limit: 36_000_000, windowSeconds: 3600 };
const ALGORITHMS = ['fixed-window', 'sliding-window', 'token-bucket', 'gcra'] as const;

type RateLimitFactory = (options: Record<string, unknown>) => RequestHandler;

/** Connections of the "busy server" group: enough that the app, not the round trip, is the limit. */
const BUSY_CONNECTIONS = 50;

function kit(algorithm: (typeof ALGORITHMS)[number], group = 'rate-limit'): Scenario {
  return {
    id: `${group}/${algorithm}`,
    label: `rateLimit ${algorithm}`,
    kind: 'kit',
    peer: `${group}/flexible`,
    // At most one: concurrent decisions for one client share a script call (coalescing).
    expect: {
      maxCommandsPerRequest: 1,
      minVsBare: 0.97,
      minVs: { scenario: `${group}/flexible`, ratio: 1 },
    },
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

function peers(group: string): Scenario[] {
  return [
    {
      id: `${group}/express-rate-limit`,
      label: 'express-rate-limit + rate-limit-redis',
      kind: 'peer',
      build: async (ctx) => ({ app: benchApp({ use: [expressRateLimitRedis(ctx, QUOTA)] }) }),
    },
    {
      id: `${group}/flexible`,
      label: 'rate-limiter-flexible RateLimiterRedis',
      kind: 'peer',
      build: async (ctx) => ({ app: benchApp({ use: [flexibleRedis(ctx, QUOTA)] }) }),
    },
  ];
}

export const rateLimitGroup: Group = {
  id: 'rate-limit',
  title: 'Rate limiting, nothing denied',
  note: `Limit ${QUOTA.limit.toLocaleString('en-US')} per ${QUOTA.windowSeconds} s; one client key (127.0.0.1).`,
  references: [redisGet],
  scenarios: [...ALGORITHMS.map((a) => kit(a)), ...peers('rate-limit')],
};

/**
 * The same at 50 connections. At 10, every Redis-backed row waits on its round trip (even the one-GET
 * floor), so req/s there mostly measures latency; at 50 the app process is busy all the time, and
 * req/s measures what each request costs it.
 */
export const rateLimitBusyGroup: Group = {
  id: 'rate-limit-busy',
  title: `Rate limiting, nothing denied, ${BUSY_CONNECTIONS} connections`,
  note:
    `As above, with ${BUSY_CONNECTIONS} concurrent connections instead of the default, and two of the four ` +
    'algorithms (one hash, one string: the others cost the app the same).',
  connections: BUSY_CONNECTIONS,
  references: [redisGet],
  scenarios: [
    kit('fixed-window', 'rate-limit-busy'),
    kit('gcra', 'rate-limit-busy'),
    ...peers('rate-limit-busy'),
  ],
};
