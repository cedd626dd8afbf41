import express from 'express';
import { cacheResponse, createCache } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { heartbeat } from '../../lib/pubsub';
import { captureEvents } from '../helpers/events';
import { useRedisServer } from '../helpers/redis';
import { listen, quietLogger, sleep } from './helpers';

// A deaf L1 (its invalidation channel down) is not read before Redis, and answers only as the fail
// mode's copy when Redis does not: not once Redis has answered meanwhile (it can be reached, and the
// copy may have been invalidated unheard), and for every kind of request that Redis fails.

const redis = useRedisServer();
const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  while (closers.length) await closers.pop()!().catch(() => {});
});

const db = { price: 1 };

async function instance(client: RedisClient) {
  const cache = createCache({ redis: client, timeout: 300, logger: quietLogger() });
  closers.push(() => cache.close());
  const mw = cacheResponse({ cache, ttl: '1m', jitter: 0, tags: () => ['price'] });
  const app = express();
  app.get('/price', mw, (_req, res) => {
    res.json({ price: db.price });
  });
  const server = await listen(app);
  closers.push(server.close);
  await cache.ready();
  return { url: `${server.url}/price`, mw, cache };
}

async function read(url: string, headers: Record<string, string> = {}, method = 'GET') {
  const res = await fetch(url, { headers, method });
  const text = await res.text();
  return {
    status: res.status,
    cache: res.headers.get('x-cache'),
    price: text && res.status === 200 ? (JSON.parse(text) as { price: number }).price : undefined,
  };
}

async function untilHit(url: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if ((await read(url)).cache === 'HIT') return;
    await sleep(10);
  }
  throw new Error('never a HIT');
}

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
    await admin.ping();
    const subscribers = String(await admin.call('CLIENT', 'LIST', 'TYPE', 'pubsub'))
      .trim()
      .split('\n').length;
    const connected = Number(/connected_clients:(\d+)/.exec(await admin.info('clients'))![1]);
    const [, maxclients] = (await admin.config('GET', 'maxclients')) as [string, string];
    // The subscribers are cut and cannot come back: A's L1 is deaf (its main client is fine).
    await admin.config('SET', 'maxclients', String(connected - subscribers));
    try {
      await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
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
    } finally {
      await admin.call('CLIENT', 'UNPAUSE').catch(() => {});
      await admin.config('SET', 'maxclients', maxclients);
    }
  });
});

describe('deaf L1 while Redis is paused past the heartbeat: requests that skip the fill', () => {
  const saved = { ...heartbeat };
  afterEach(() => {
    Object.assign(heartbeat, saved);
  });

  async function whilePaused(check: () => Promise<void>) {
    const admin = redis.plain();
    await admin.ping();
    await admin.call('CLIENT', 'PAUSE', '2500', 'ALL');
    try {
      await sleep(700);
      await check();
    } finally {
      await admin.call('CLIENT', 'UNPAUSE').catch(() => {});
    }
  }

  it('a GET with Cache-Control: only-if-cached gets the L1 entry, not 504', async () => {
    Object.assign(heartbeat, { everyMs: 100, timeoutMs: 150 });
    const a = await instance(redis.client());
    await untilHit(a.url);
    expect(await read(a.url, { 'cache-control': 'only-if-cached' })).toEqual({
      status: 200,
      cache: 'HIT',
      price: 1,
    });
    await whilePaused(async () => {
      // A plain GET is served from L1 (7880b0c)...
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
    Object.assign(heartbeat, { everyMs: 100, timeoutMs: 150 });
    const a = await instance(redis.client());
    await untilHit(a.url);
    await whilePaused(async () => {
      expect(await read(a.url)).toEqual({ status: 200, cache: 'HIT', price: 1 });
      const head = await read(a.url, {}, 'HEAD');
      expect(head.cache).toBe('HIT');
    });
  });
});

describe('cache.wrap deaf bypass: a copy past its freshness', () => {
  const saved = { ...heartbeat };
  afterEach(() => {
    Object.assign(heartbeat, saved);
  });

  it("is reported as 'stale' (as the L1 path and cacheResponse do), not as an 'l1-hit'", async () => {
    Object.assign(heartbeat, { everyMs: 100, timeoutMs: 150 });
    const cache = createCache({ redis: redis.client(), timeout: 200, logger: quietLogger() });
    closers.push(() => cache.close());
    await cache.ready();
    let runs = 0;
    const price = () =>
      cache.wrap('price', async () => ({ price: ++runs }), { ttl: 300, staleWhileRevalidate: '1m' });
    expect(await price()).toEqual({ price: 1 });
    await sleep(50);
    expect(await price()).toEqual({ price: 1 }); // L1 hit
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
    Object.assign(heartbeat, { everyMs: 100, timeoutMs: 150 });
    const logger = quietLogger();
    const cache = createCache({ redis: redis.client(), timeout: 200, logger });
    closers.push(() => cache.close());
    await cache.ready();
    let runs = 0;
    const price = () =>
      cache.wrap('price', async () => ({ price: ++runs }), { ttl: 300, staleWhileRevalidate: '1m' });
    expect(await price()).toEqual({ price: 1 });
    await sleep(50);
    expect(await price()).toEqual({ price: 1 });
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
      expect(runs).toBe(1);
    } finally {
      await admin.call('CLIENT', 'UNPAUSE').catch(() => {});
    }
  }, 20_000);
});
