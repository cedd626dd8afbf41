import express from 'express';
import { cacheResponse, createCache } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { useRedisServer } from '../helpers/redis';
import { listen, quietLogger, sleep } from './helpers';

// Two app instances, each with its own client and an L1. B changes the price and invalidates its
// tag; A must not answer the old price from its L1 once B's invalidate() has resolved, also while
// A's pub/sub connection (the only way it hears B) is down.
const redis = useRedisServer();
const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((close) => close()));
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
  return { url: `${server.url}/price`, mw };
}

async function read(url: string) {
  const res = await fetch(url);
  return { cache: res.headers.get('x-cache'), price: ((await res.json()) as { price: number }).price };
}

/** A's answers for `ms` after B's invalidation resolved, that still show the old price. */
async function staleAfterInvalidation(
  a: { url: string },
  b: Awaited<ReturnType<typeof instance>>,
  ms: number,
) {
  db.price = 2;
  await b.mw.invalidate({ tags: ['price'] });
  const stale: Array<{ cache: string | null; price: number }> = [];
  for (const started = Date.now(); Date.now() - started < ms; await sleep(5)) {
    const answer = await read(a.url);
    if (answer.price !== 2) stale.push(answer);
  }
  return stale;
}

/** Reads until A answers from its L1 (the fill's store lands after the response). */
async function untilHit(url: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if ((await read(url)).cache === 'HIT') return;
    await sleep(10);
  }
  throw new Error('never a HIT');
}

describe('cacheResponse L1 while its invalidation channel is down', () => {
  beforeEach(async () => {
    await redis.plain().flushall();
    db.price = 1;
  });

  it('serves no entry another instance invalidated while its pub/sub connection was cut (CLIENT KILL), and uses L1 again once it hears', async () => {
    const a = await instance(redis.client());
    const b = await instance(redis.client());
    await untilHit(a.url);
    await redis.plain().call('CLIENT', 'KILL', 'TYPE', 'pubsub');
    expect(await staleAfterInvalidation(a, b, 500)).toEqual([]);
    // Back on the channel: the next fill goes to L1 and hits come from it again.
    await untilHit(a.url);
    expect(await read(a.url)).toEqual({ cache: 'HIT', price: 2 });
  });

  it('keeps nothing new in L1 while its pub/sub connection cannot come back (Redis refuses it: maxclients)', async () => {
    const a = await instance(redis.client());
    const b = await instance(redis.client());
    await untilHit(a.url);
    const admin = redis.plain();
    const subscribers = String(await admin.call('CLIENT', 'LIST', 'TYPE', 'pubsub'))
      .trim()
      .split('\n').length;
    const connected = Number(/connected_clients:(\d+)/.exec(await admin.info('clients'))![1]);
    const [, maxclients] = (await admin.config('GET', 'maxclients')) as [string, string];
    // Room for every connection but the subscribers, which are then cut and cannot come back.
    await admin.config('SET', 'maxclients', String(connected - subscribers));
    try {
      await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
      expect(await staleAfterInvalidation(a, b, 300)).toEqual([]);
      // Read from Redis meanwhile: had it gone to L1, it would outlive the next change, unheard.
      db.price = 3;
      await b.mw.invalidate({ tags: ['price'] });
      expect(await read(a.url)).toEqual({ cache: 'MISS', price: 3 });
      db.price = 4;
      await b.mw.invalidate({ tags: ['price'] });
      for (let i = 0; i < 5; i++) expect((await read(a.url)).price).toBe(4);
    } finally {
      await admin.config('SET', 'maxclients', maxclients);
    }
  });

  it('still answers from L1 while Redis is down, as its fail mode says', async () => {
    const a = await instance(redis.client());
    await untilHit(a.url);
    await redis.server.kill();
    try {
      await sleep(100);
      for (let i = 0; i < 5; i++) expect(await read(a.url)).toEqual({ cache: 'HIT', price: 1 });
    } finally {
      await redis.server.restart();
    }
  });
});
