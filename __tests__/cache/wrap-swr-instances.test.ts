import { createCache } from '../../lib/cache';
import { eventually, useFlushedClient, useRedisServer } from '../helpers/redis';
import { quietLogger, sleep } from './helpers';

const redis = useRedisServer();
useFlushedClient(redis, () => {});

describe('cache.wrap staleWhileRevalidate across two instances with L1', () => {
  it('runs fn once per stale period, not once per instance (the second takes what the first stored)', async () => {
    const a = createCache({ redis: redis.client(), logger: quietLogger(), jitter: 0 });
    const b = createCache({ redis: redis.client(), logger: quietLogger(), jitter: 0 });
    await Promise.all([a.ready(), b.ready()]);
    let runs = 0;
    const build = async () => {
      runs++;
      await sleep(20);
      return { run: runs };
    };
    const opts = { ttl: 1000, staleWhileRevalidate: '1m' };
    expect(await a.wrap('report', build, opts)).toEqual({ run: 1 });
    expect(await b.wrap('report', build, opts)).toEqual({ run: 1 }); // from Redis, now in B's L1 too
    expect(runs).toBe(1);

    await sleep(1100); // both L1 copies (and Redis) are stale now
    expect(await a.wrap('report', build, opts)).toEqual({ run: 1 }); // stale: A refreshes
    await eventually(async () => (await a.wrap('report', build, opts)).run === 2, "A's refresh stored");
    expect(await b.wrap('report', build, opts)).toEqual({ run: 1 }); // stale, from B's L1
    // B's refresh finds A's fresh value in Redis and takes it instead of running fn.
    await eventually(async () => (await b.wrap('report', build, opts)).run === 2, 'B took the fresh value');
    expect(runs).toBe(2);
    await a.close();
    await b.close();
  });
});
