import express from 'express';
import { cacheResponse, createCache } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { heartbeat } from '../../lib/pubsub';
import { useRedisServer } from '../helpers/redis';
import { listen, quietLogger, sleep, waitForKeys } from './helpers';

// Two app instances, each with its own client and an L1. B changes the price and invalidates its
// tag; A must not answer the old price from its L1 once B's invalidate() has resolved, also while
// A's pub/sub connection (the only way it hears B) is down.
const redis = useRedisServer();
const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((close) => close()));
});

const db = { price: 1 };

async function instance(client: RedisClient, { ready = true } = {}) {
  const cache = createCache({ redis: client, timeout: 300, logger: quietLogger() });
  closers.push(() => cache.close());
  const mw = cacheResponse({ cache, ttl: '1m', jitter: 0, tags: () => ['price'] });
  const app = express();
  app.get('/price', mw, (_req, res) => {
    res.json({ price: db.price });
  });
  const server = await listen(app);
  closers.push(server.close);
  if (ready) await cache.ready();
  return { url: `${server.url}/price`, mw, cache };
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

  describe('Redis paused past the pub/sub heartbeat (the client stays connected)', () => {
    const saved = { ...heartbeat };
    afterEach(() => {
      Object.assign(heartbeat, saved);
    });

    /** Pauses Redis long enough for the heartbeat to give up on the subscriber, then runs `check`. */
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

    it('cacheResponse still answers from L1, as its fail mode says', async () => {
      Object.assign(heartbeat, { everyMs: 100, timeoutMs: 150 });
      const a = await instance(redis.client());
      await untilHit(a.url);
      await whilePaused(async () => {
        for (let i = 0; i < 3; i++) expect(await read(a.url)).toEqual({ cache: 'HIT', price: 1 });
      });
    });

    it('cache.wrap still answers from L1 without running fn', async () => {
      Object.assign(heartbeat, { everyMs: 100, timeoutMs: 150 });
      const cache = createCache({ redis: redis.client(), timeout: 200, logger: quietLogger() });
      closers.push(() => cache.close());
      await cache.ready();
      let runs = 0;
      const price = () => cache.wrap('price', async () => ({ price: ++runs }), { ttl: '1m' });
      expect(await price()).toEqual({ price: 1 });
      await whilePaused(async () => {
        for (let i = 0; i < 3; i++) expect(await price()).toEqual({ price: 1 });
      });
      expect(runs).toBe(1);
    });
  });

  it('a fill in flight keeps its stale-if-error copy from L1 when Redis dies meanwhile', async () => {
    const client = redis.client();
    const mw = cacheResponse({
      redis: client,
      ttl: 100,
      jitter: 0,
      staleIfError: '1m',
      timeout: 200,
      l1: { max: 10 },
      logger: quietLogger(),
    });
    closers.push(() => mw.cache.close());
    await mw.cache.ready();
    let failing = false;
    const app = express();
    app.get('/sie', mw, async (_req, res, next) => {
      if (!failing) return void res.send('good');
      // The database goes down with Redis: the origin fails after a while.
      await sleep(600);
      next(new Error('database down'));
    });
    const server = await listen(app);
    closers.push(server.close);
    expect((await fetch(`${server.url}/sie`)).headers.get('x-cache')).toBe('MISS');
    await waitForKeys(client, 'erk:c:*');
    await sleep(200); // stale now (ttl 100 ms), still within staleIfError
    failing = true;
    const answer = fetch(`${server.url}/sie`).then(async (r) => [
      r.status,
      r.headers.get('x-cache'),
      await r.text(),
    ]);
    await sleep(200); // the fill holds its lock and the origin runs
    await redis.server.kill();
    try {
      expect(await answer).toEqual([200, 'STALE', 'good']);
    } finally {
      await redis.server.restart();
    }
  });

  it("a cache made while the channel's resubscribe is refused (an ACL change) keeps its L1 off until it lands", async () => {
    const admin = redis.plain();
    await admin.call('ACL', 'SETUSER', 'app2', 'on', '>pw', '~*', '&*', '+@all');
    const client = redis.client({ url: `redis://app2:pw@127.0.0.1:${redis.server.port}` });
    await instance(client); // the app's first cache on this client: the channel lands
    const b = await instance(redis.client());
    try {
      // Redis drops the subscriber; its resubscribe is refused (NOPERM), and retried with backoff.
      await admin.call('ACL', 'SETUSER', 'app2', 'resetchannels', '&other');
      await sleep(300);
      // A cache made now (a route mounted later) on the same client and channel.
      const a2 = await instance(client, { ready: false });
      expect(await read(a2.url)).toEqual({ cache: 'MISS', price: 1 });
      await sleep(100);
      await read(a2.url);
      expect(await staleAfterInvalidation(a2, b, 500)).toEqual([]);
      // Allowed again: it lands, and L1 answers.
      await admin.call('ACL', 'SETUSER', 'app2', 'resetchannels', '&*');
      await a2.cache.ready();
      await untilHit(a2.url);
    } finally {
      await admin.call('ACL', 'SETUSER', 'app2', 'resetchannels', '&*');
    }
  });
});
