import express from 'express';
import { cacheResponse, createCache } from '../../lib/cache';
import { useRedisServer } from '../helpers/redis';
import { useDeafFixture, useShortHeartbeat, whilePaused, withSubscribersRefused } from './deaf-fixture';
import { listen, quietLogger, sleep, waitForKeys } from './helpers';

// Two app instances, each with its own client and an L1. B changes the price and invalidates its
// tag; A must not answer the old price from its L1 once B's invalidate() has resolved, also while
// A's pub/sub connection (the only way it hears B) is down.
const redis = useRedisServer();
const { closers, db, instance, untilHit, ...fixture } = useDeafFixture();

/** X-Cache and price of one GET. */
async function read(url: string) {
  const { cache, price } = await fixture.read(url);
  return { cache, price };
}

/** A's answers for `ms` after B's invalidation resolved, that still show the old price. */
async function staleAfterInvalidation(
  a: { url: string },
  b: Awaited<ReturnType<typeof instance>>,
  ms: number,
) {
  db.price = 2;
  await b.mw.invalidate({ tags: ['price'] });
  const stale: Array<{ cache: string | null; price: number | undefined }> = [];
  for (const started = Date.now(); Date.now() - started < ms; await sleep(5)) {
    const answer = await read(a.url);
    if (answer.price !== 2) stale.push(answer);
  }
  return stale;
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
    await withSubscribersRefused(redis.plain(), async () => {
      expect(await staleAfterInvalidation(a, b, 300)).toEqual([]);
      // Read from Redis meanwhile: had it gone to L1, it would outlive the next change, unheard.
      db.price = 3;
      await b.mw.invalidate({ tags: ['price'] });
      expect(await read(a.url)).toEqual({ cache: 'MISS', price: 3 });
      db.price = 4;
      await b.mw.invalidate({ tags: ['price'] });
      for (let i = 0; i < 5; i++) expect((await read(a.url)).price).toBe(4);
    });
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
    useShortHeartbeat();

    it('cacheResponse still answers from L1, as its fail mode says', async () => {
      const a = await instance(redis.client());
      await untilHit(a.url);
      await whilePaused(redis.plain(), async () => {
        for (let i = 0; i < 3; i++) expect(await read(a.url)).toEqual({ cache: 'HIT', price: 1 });
      });
    });

    it('cache.wrap still answers from L1 without running fn', async () => {
      const cache = createCache({ redis: redis.client(), timeout: 200, logger: quietLogger() });
      closers.push(() => cache.close());
      await cache.ready();
      let runs = 0;
      const price = () => cache.wrap('price', async () => ({ price: ++runs }), { ttl: '1m' });
      expect(await price()).toEqual({ price: 1 });
      await whilePaused(redis.plain(), async () => {
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
