import type { RequestHandler } from 'express';
import { benchApp, kitExport, send } from './app';
import { expressRateLimitRedis, flexibleRedis, type Quota } from './rate-limit-peers';
import type { BuiltApp, Group, RequestSpec } from './types';

const QUOTA: Quota = { limit: 5, windowSeconds: 3600 };

type RateLimitFactory = (options: Record<string, unknown>) => RequestHandler;

/** Uses up the quota, so that every measured request is a denial. */
function denied(handler: RequestHandler): BuiltApp {
  return {
    app: benchApp({ use: [handler] }),
    prime: async (baseUrl: string, request: RequestSpec) => {
      for (let i = 0; i <= QUOTA.limit; i++) await (await send(baseUrl, request)).arrayBuffer();
      return undefined;
    },
  };
}

export const rateLimitDenyGroup: Group = {
  id: 'rate-limit-deny',
  title: 'Rate limiting, every request denied',
  note: `Limit ${QUOTA.limit} per ${QUOTA.windowSeconds} s, used up before the run: every measured request is a 429.`,
  scenarios: [
    {
      id: 'rate-limit-deny/kit',
      label: 'rateLimit (deny cache)',
      kind: 'kit',
      peer: 'rate-limit-deny/flexible-block',
      status: 429,
      expect: { commandsPerRequest: 0 },
      build: async (ctx) => {
        const rateLimit = kitExport<RateLimitFactory>('rate-limit', 'rateLimit');
        return denied(
          rateLimit({
            redis: ctx.redis(),
            limit: QUOTA.limit,
            window: QUOTA.windowSeconds * 1000,
            prefix: ctx.prefix,
          }),
        );
      },
    },
    {
      id: 'rate-limit-deny/express-rate-limit',
      label: 'express-rate-limit + rate-limit-redis',
      kind: 'peer',
      status: 429,
      build: async (ctx) => denied(expressRateLimitRedis(ctx, QUOTA)),
    },
    {
      id: 'rate-limit-deny/flexible',
      label: 'rate-limiter-flexible RateLimiterRedis',
      kind: 'peer',
      status: 429,
      build: async (ctx) => denied(flexibleRedis(ctx, QUOTA)),
    },
    {
      id: 'rate-limit-deny/flexible-block',
      label: 'rate-limiter-flexible + inMemoryBlockOnConsumed',
      kind: 'peer',
      status: 429,
      build: async (ctx) =>
        denied(
          flexibleRedis(ctx, QUOTA, {
            inMemoryBlockOnConsumed: QUOTA.limit + 1,
            inMemoryBlockDuration: QUOTA.windowSeconds,
          }),
        ),
    },
  ],
};
