import type Redis from 'ioredis';
import { createCache } from '../../lib/cache';
import { RedisUnavailableError } from '../../lib/errors';
import { eventually, useRedisServer } from '../helpers/redis';
import { quietLogger, sleep } from './helpers';

// cache.wrap's background refresh keeps the stale value when it fails. It is quiet only when the
// cache's own Redis call could not reach Redis (an outage the kit reports once, and one warning per
// read would flood the log): a refusal (Redis up) and fn's own errors are logged.

const redis = useRedisServer();
let admin: Redis;
beforeAll(() => {
  admin = redis.plain();
});
beforeEach(async () => {
  await admin.config('SET', 'maxmemory', '0');
  await admin.flushall();
});

it('a refresh Redis refuses (OOM: Redis up, no outage to report) is still logged', async () => {
  const logger = quietLogger();
  const cache = createCache({ redis: redis.client(), l1: false, timeout: '2s', logger });
  let runs = 0;
  const price = () =>
    cache.wrap('price', async () => ({ price: ++runs }), { ttl: 200, staleWhileRevalidate: '1m' });
  expect(await price()).toEqual({ price: 1 });
  await sleep(300); // stale now
  await admin.config('SET', 'maxmemory-policy', 'noeviction');
  await admin.config('SET', 'maxmemory', '1');
  try {
    expect(await price()).toEqual({ price: 1 }); // stale served, refresh started
    await sleep(300);
  } finally {
    await admin.config('SET', 'maxmemory', '0');
  }
  // Nothing else would tell: the breaker stays closed, the connection never dropped.
  expect(logger.warnings.map((w) => w.message)).toContain('background refresh failed; stale value kept');
});

it("fn's own RedisUnavailableError (its data source, not the cache's Redis) is still logged", async () => {
  const logger = quietLogger();
  const cache = createCache({ redis: redis.client(), l1: false, timeout: '2s', logger });
  let runs = 0;
  const load = async () => {
    runs++;
    if (runs > 1) throw new RedisUnavailableError('inventory Redis down');
    return { stock: 5 };
  };
  const stock = () => cache.wrap('stock', load, { ttl: 200, staleWhileRevalidate: '1m' });
  expect(await stock()).toEqual({ stock: 5 });
  await sleep(300);
  expect(await stock()).toEqual({ stock: 5 });
  await eventually(() => runs === 2, 'the refresh to run fn');
  await sleep(50);
  expect(logger.warnings.map((w) => w.message)).toContain('background refresh failed; stale value kept');
});
