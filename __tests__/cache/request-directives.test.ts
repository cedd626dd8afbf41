import express from 'express';
import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { useFlushedClient, useRedisServer } from '../helpers/redis';
import { quietLogger, sleep, untilHit } from './helpers';

// HTTP semantics a cache owes the clients and caches around it (RFC 9110, RFC 9111).

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

describe('cacheResponse and the HTTP around it', () => {
  it('does not store the answer to a request with Cache-Control: no-store, but still serves it an entry', async () => {
    let calls = 0;
    const app = express().get(
      '/d',
      cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() }),
      (_req, res) => {
        calls += 1;
        res.send(`v${calls}`);
      },
    );
    const first = await request(app).get('/d').set('Cache-Control', 'no-store');
    expect([first.text, first.headers['x-cache']]).toEqual(['v1', 'MISS']);
    await sleep(100);
    // Nothing was stored: the next request fills.
    const second = await request(app).get('/d');
    expect([second.text, second.headers['x-cache']]).toEqual(['v2', 'MISS']);
    const hit = await untilHit(app, '/d');
    expect(hit.text).toBe('v2');
    const noStore = await request(app).get('/d').set('Cache-Control', 'max-age=0, no-store');
    expect([noStore.text, noStore.headers['x-cache']]).toEqual(['v2', 'HIT']);
    expect(calls).toBe(2);
  });

  it('answers Cache-Control: only-if-cached from an entry, and without one 504 instead of calling the origin', async () => {
    let calls = 0;
    const app = express().get(
      '/o',
      cacheResponse({ redis: client, ttl: '1m', logger: quietLogger() }),
      (_req, res) => {
        calls += 1;
        res.send(`v${calls}`);
      },
    );
    const miss = await request(app).get('/o').set('Cache-Control', 'no-transform, only-if-cached');
    expect(miss.status).toBe(504);
    expect(miss.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(miss.body).toMatchObject({ status: 504, type: 'urn:express-redis-kit:problem:not-cached' });
    expect(miss.headers['cache-control']).toBe('no-store');
    expect(calls).toBe(0);
    await untilHit(app, '/o');
    const hit = await request(app).get('/o').set('Cache-Control', 'only-if-cached');
    expect([hit.status, hit.text, hit.headers['x-cache']]).toEqual([200, 'v1', 'HIT']);
    expect(calls).toBe(1);
  });

  it.each([false, true])(
    'a cached POST past ttl runs its route (no stale answer the GET-only background refresh could never renew), L1 %s',
    async (withL1) => {
      let posts = 0;
      let gets = 0;
      const app = express();
      app.use(express.json());
      app.use((req, _res, next) => {
        if (req.method === 'GET') gets += 1;
        next();
      });
      app.post(
        '/graphql',
        cacheResponse({
          redis: client,
          ttl: 200,
          jitter: 0,
          staleWhileRevalidate: '1m',
          l1: withL1 ? { max: 10 } : false,
          methods: ['POST'],
          key: (req) => `graphql ${withL1} ${JSON.stringify(req.body)}`,
          logger: quietLogger(),
        }),
        (req, res) => {
          posts += 1;
          res.json({ q: req.body.q, version: posts });
        },
      );
      const ask = () => request(app).post('/graphql').send({ q: 'products' });
      expect((await ask()).body).toEqual({ q: 'products', version: 1 });
      await sleep(100);
      expect((await ask()).headers['x-cache']).toBe('HIT');
      await sleep(250);
      const past = await ask();
      expect(past.headers['x-cache']).toBe('MISS');
      expect(past.body).toEqual({ q: 'products', version: 2 });
      await sleep(100);
      const again = await ask();
      expect([again.headers['x-cache'], again.body]).toEqual(['HIT', { q: 'products', version: 2 }]);
      expect(gets).toBe(0);
    },
  );

  it('answers conditionals only for GET and HEAD: a cached POST sends its whole answer', async () => {
    let calls = 0;
    const app = express();
    app.use(express.json());
    app.post(
      '/search',
      cacheResponse({
        redis: client,
        ttl: '1m',
        l1: false,
        methods: ['POST'],
        key: (req) => `search ${JSON.stringify(req.body)}`,
        logger: quietLogger(),
      }),
      (req, res) => {
        calls += 1;
        res.set('Last-Modified', 'Tue, 02 Jan 2024 00:00:00 GMT').json({ q: req.body.q, calls });
      },
    );
    // A miss whose If-None-Match would match anything: the search ran, its answer must arrive.
    const miss = await request(app).post('/search').set('If-None-Match', '*').send({ q: 'a' });
    expect([miss.status, miss.body]).toEqual([200, { q: 'a', calls: 1 }]);
    await sleep(100);
    const stored = await request(app).post('/search').send({ q: 'a' });
    expect(stored.headers['x-cache']).toBe('HIT');
    for (const [name, value] of [
      ['If-None-Match', stored.headers.etag as string],
      ['If-Modified-Since', 'Wed, 03 Jan 2024 00:00:00 GMT'],
    ] as const) {
      const hit = await request(app).post('/search').set(name, value).send({ q: 'a' });
      expect([hit.status, hit.headers['x-cache'], hit.body]).toEqual([200, 'HIT', { q: 'a', calls: 1 }]);
    }
  });

  it('keeps the Age a relayed upstream answer came with, and adds its own time in the cache on hits', async () => {
    const app = express().get(
      '/proxied',
      cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() }),
      (_req, res) => {
        res.set({ 'Cache-Control': 'public, max-age=3600', Age: '3000' }).send('upstream');
      },
    );
    const miss = await request(app).get('/proxied');
    expect([miss.headers['x-cache'], miss.headers.age]).toEqual(['MISS', '3000']);
    const hit = await untilHit(app, '/proxied');
    expect(Number(hit.headers.age)).toBeGreaterThanOrEqual(3000);
    await sleep(1100);
    expect(Number((await request(app).get('/proxied')).headers.age)).toBeGreaterThanOrEqual(3001);
  });
});
