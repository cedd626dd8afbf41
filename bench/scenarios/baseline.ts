import { benchApp } from './app';
import type { Group, Scenario } from './types';

/** Bare Express: the 1.00 every ratio is measured against. Run in every group, interleaved with it. */
export const bare: Scenario = {
  id: 'baseline/bare',
  label: 'bare Express',
  kind: 'baseline',
  expect: { commandsPerRequest: 0 },
  build: async () => ({ app: benchApp() }),
};

/** The one-round-trip floor: what any middleware that asks Redis once per request can hope for. */
export const redisGet: Scenario = {
  id: 'baseline/redis-get',
  label: 'Express + one Redis GET',
  kind: 'baseline',
  expect: { commandsPerRequest: 1 },
  build: async (ctx) => {
    const redis = ctx.redis();
    const key = `${ctx.prefix}floor`;
    await redis.set(key, 'x', 'EX', 3600);
    return {
      app: benchApp({
        use: [
          async function oneGet(_req, _res, next) {
            await redis.get(key);
            next();
          },
        ],
      }),
    };
  },
};

export const baseline: Group = {
  id: 'baseline',
  title: 'Floor: bare Express and one Redis round trip',
  note: '"+ one Redis GET" is the floor for any middleware that must ask Redis once per request.',
  scenarios: [bare, redisGet],
};
