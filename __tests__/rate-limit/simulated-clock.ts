import type Redis from 'ioredis';
import { MODE_REFUND, RATE_LIMIT_LUA } from '../../lib/rate-limit/script';
import { LUA_NOW_MS } from '../../lib/scripts';

/** A client with the rate-limit script as `rl` (one key) and `rlRefund` (one key and its marker). */
export type ClockedRedis = Redis & {
  rl(...args: Array<string | number>): Promise<number[]>;
  rlRefund(...args: Array<string | number>): Promise<number[]>;
};

/**
 * Defines the rate-limit script, unchanged except that its clock is simulated: read from the keys
 * `clock:s` and `clock:us` instead of TIME, so time can stand still or jump without a test taking
 * minutes. Set the clock with {@link setClock}.
 */
export function withSimulatedClock(client: Redis): ClockedRedis {
  const clock = "{ redis.call('GET', 'clock:s'), redis.call('GET', 'clock:us') }";
  const lua = RATE_LIMIT_LUA.replace("redis.call('TIME')", clock);
  if (lua === RATE_LIMIT_LUA || !RATE_LIMIT_LUA.startsWith(LUA_NOW_MS)) {
    throw new Error('the rate-limit script no longer reads the clock through LUA_NOW_MS');
  }
  client.defineCommand('rl', { numberOfKeys: 1, lua });
  client.defineCommand('rlRefund', { numberOfKeys: 2, lua });
  return client as ClockedRedis;
}

let markers = 0;

/**
 * Gives back `requests` (cost, member, origin, hints... each) counted in `key` under one policy, as
 * the limiter does: a new marker key each call, and a deadline that never passes on the simulated clock.
 */
export function refund(
  client: ClockedRedis,
  key: string,
  policy: [code: string, limit: number, windowMs: number],
  requests: Array<string | number>,
) {
  return client.rlRefund(
    key,
    `${key}:x:${++markers}`,
    MODE_REFUND,
    ...policy,
    Number.MAX_SAFE_INTEGER,
    ...requests,
  );
}

/** Sets the simulated clock to `ms` (plus `us` microseconds). */
export function setClock(client: Redis, ms: number, us = 0) {
  return client.mset('clock:s', Math.floor(ms / 1000), 'clock:us', (ms % 1000) * 1000 + us);
}
