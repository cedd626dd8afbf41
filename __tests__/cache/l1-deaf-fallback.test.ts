import { createCache } from '../../lib/cache';
import { captureEvents } from '../helpers/events';
import { useRedisServer } from '../helpers/redis';
import { useDeafFixture, useShortHeartbeat, whilePaused, withSubscribersRefused } from './deaf-fixture';
import { quietLogger, sleep } from './helpers';

// A deaf L1 (its invalidation channel down) is not read before Redis, and answers only as the fail
// mode's copy when Redis does not: not once Redis has answered meanwhile (it can be reached, and the
// copy may have been invalidated unheard), and for every kind of request that Redis fails.

const redis = useRedisServer();
const { closers, db, instance, read, untilHit } = useDeafFixture();

beforeEach(async () => {
  await redis.plain().flushall();
  db.price = 1;
});

describe('a deaf L1 after Redis answered', () => {
  it('one slow lookup does not bring back a price this instance already saw invalidated', async () => {
    const a = await instance(redis.client());
    const b = await instance(redis.client());
    await untilHit(a.url); // price 1 in A's L1
    const admin = redis.plain();
    await withSubscribersRefused(admin, async () => {
      await sleep(50);
      db.price = 2;
      await b.mw.invalidate({ tags: ['price'] });
      // A reads from Redis: the new price, twice (the second one a Redis HIT).
      expect(await read(a.url)).toEqual({ status: 200, cache: 'MISS', price: 2 });
      await sleep(100);
      expect(await read(a.url)).toEqual({ status: 200, cache: 'HIT', price: 2 });
      // One lookup that Redis answers late (a slow command elsewhere for 600 ms; timeout is 300).
      await admin.call('CLIENT', 'PAUSE', '600', 'ALL');
      const during = await read(a.url);
      await sleep(400);
      // The route's answer, not the deaf copy (price 1) that Redis has shown to be outdated.
      expect(during).toEqual({ status: 200, cache: 'BYPASS', price: 2 });
    });
  });
});

describe('deaf L1 while Redis is paused past the heartbeat: requests that skip the fill', () => {
  useShortHeartbeat();

  it('a GET with Cache-Control: only-if-cached gets the L1 entry, not 504', async () => {
    const a = await instance(redis.client());
    await untilHit(a.url);
    expect(await read(a.url, { 'cache-control': 'only-if-cached' })).toEqual({
      status: 200,
      cache: 'HIT',
      price: 1,
    });
    await whilePaused(redis.plain(), async () => {
      // A plain GET is served from L1...
      expect(await read(a.url)).toEqual({ status: 200, cache: 'HIT', price: 1 });
      // ...and so is one told to use only the cache.
      expect(await read(a.url, { 'cache-control': 'only-if-cached' })).toEqual({
        status: 200,
        cache: 'HIT',
        price: 1,
      });
    });
  });

  it('a HEAD is answered from L1 as a GET is, without running the route', async () => {
    const a = await instance(redis.client());
    await untilHit(a.url);
    await whilePaused(redis.plain(), async () => {
      expect(await read(a.url)).toEqual({ status: 200, cache: 'HIT', price: 1 });
      const head = await read(a.url, {}, 'HEAD');
      expect(head.cache).toBe('HIT');
    });
  });
});

describe('cache.wrap deaf bypass: a copy past its freshness', () => {
  useShortHeartbeat();

  /** A wrap() value in L1, fresh for 300 ms then stale for a minute; `runs()`: how often fn ran. */
  async function stalePrice(logger = quietLogger()) {
    const cache = createCache({ redis: redis.client(), timeout: 200, logger });
    closers.push(() => cache.close());
    await cache.ready();
    let runs = 0;
    const price = () =>
      cache.wrap('price', async () => ({ price: ++runs }), { ttl: 300, staleWhileRevalidate: '1m' });
    expect(await price()).toEqual({ price: 1 });
    await sleep(50);
    expect(await price()).toEqual({ price: 1 }); // L1 hit
    return { price, runs: () => runs };
  }

  it("is reported as 'stale' (as the L1 path and cacheResponse do), not as an 'l1-hit'", async () => {
    const { price } = await stalePrice();
    const admin = redis.plain();
    await admin.ping();
    await admin.call('CLIENT', 'PAUSE', '2500', 'ALL');
    const events = captureEvents('cache');
    try {
      await sleep(700); // deaf now; the copy is past its 300 ms freshness
      expect(await price()).toEqual({ price: 1 });
      expect(events.events.map((e) => e.type).filter((t) => t === 'l1-hit' || t === 'stale')).toEqual([
        'stale',
      ]);
    } finally {
      events.stop();
      await admin.call('CLIENT', 'UNPAUSE').catch(() => {});
    }
  });

  it('reads of it while Redis is paused neither run fn nor log a refresh failure each', async () => {
    const logger = quietLogger();
    const { price, runs } = await stalePrice(logger);
    const admin = redis.plain();
    await admin.ping();
    await admin.call('CLIENT', 'PAUSE', '4000', 'ALL');
    try {
      await sleep(700); // deaf now; the copy is past its 300 ms freshness
      for (let i = 0; i < 8; i++) {
        expect(await price()).toEqual({ price: 1 });
        await sleep(250);
      }
      expect(logger.warnings.filter((w) => /background refresh failed/.test(w.message))).toEqual([]);
      expect(runs()).toBe(1);
    } finally {
      await admin.call('CLIENT', 'UNPAUSE').catch(() => {});
    }
  }, 20_000);
});
