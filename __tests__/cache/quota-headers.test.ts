import compression from 'compression';
import express, { type Request } from 'express';
import helmet from 'helmet';
import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { idempotency } from '../../lib/idempotency';
import { rateLimit } from '../../lib/rate-limit';
import { quietLogger, waitForKeys } from '../cache/helpers';
import { useFlushedClient, useRedisServer } from '../helpers/redis';

const redis = useRedisServer();
let admin: RedisClient;
useFlushedClient(redis, (c) => {
  admin = c;
});

// Who the client is (an API key the limiter counts by). Not a name the cache treats as a credential.
const who = (req: Request) => String(req.headers['x-client'] ?? 'anon');

describe('rateLimit mounted behind cacheResponse (it limits only origin calls)', () => {
  function app() {
    const client = redis.client();
    const a = express();
    a.use(helmet());
    a.use(compression());
    // The app-wide limiter, in front, as the README shows.
    a.use(rateLimit({ redis: client, limit: 100, window: '1m', key: who, prefix: 'rl-app:' }));
    let runs = 0;
    a.get(
      '/api/search',
      cacheResponse({ redis: client, ttl: '1m', logger: quietLogger() }),
      // A tighter limit on the costly origin only (cache hits are cheap).
      rateLimit({ redis: client, limit: 3, window: '1m', key: who, prefix: 'rl-origin:', headers: 'legacy' }),
      (req, res) => {
        runs++;
        res.json({ q: req.query.q, runs });
      },
    );
    return a;
  }

  it("a HIT for bob does not carry alice's origin quota headers (X-RateLimit-Remaining: 0)", async () => {
    const a = app();
    // alice spends her 3 origin calls on three different searches.
    for (const q of ['a', 'b', 'c']) {
      const r = await request(a).get(`/api/search?q=${q}`).set('x-client', 'alice');
      expect(r.status).toBe(200);
      expect(r.headers['x-cache']).toBe('MISS');
    }
    await waitForKeys(admin, 'erk:c:*', 3);
    // bob has never touched the origin limiter; his request is answered from the cache.
    const bob = await request(a).get('/api/search?q=c').set('x-client', 'bob');
    expect(bob.status).toBe(200);
    expect(bob.headers['x-cache']).toBe('HIT');
    // bob's own app-wide quota is right (set in front, not stored) …
    expect(bob.headers.ratelimit).toMatch(/;r=99;/);
    // … but the origin limiter's headers on his HIT are alice's, frozen in the entry: a client that
    // honours them backs off although bob has his full quota.
    expect({
      remaining: bob.headers['x-ratelimit-remaining'],
      limit: bob.headers['x-ratelimit-limit'],
    }).toEqual({ remaining: undefined, limit: undefined });
  });

  it("with the same header mode on both limiters, the HIT keeps bob's own RateLimit header, not alice's", async () => {
    const client = redis.client();
    const a = express();
    a.use(rateLimit({ redis: client, limit: 100, window: '1m', key: who, prefix: 'rl-app:' }));
    a.get(
      '/api/search',
      cacheResponse({ redis: client, ttl: '1m', logger: quietLogger() }),
      rateLimit({ redis: client, limit: 3, window: '1m', key: who, prefix: 'rl-origin:' }),
      (req, res) => {
        res.json({ q: req.query.q });
      },
    );
    for (const q of ['a', 'b', 'c']) await request(a).get(`/api/search?q=${q}`).set('x-client', 'alice');
    await waitForKeys(admin, 'erk:c:*', 3);
    const bob = await request(a).get('/api/search?q=c').set('x-client', 'bob');
    expect(bob.headers['x-cache']).toBe('HIT');
    // bob's first request: 99 of his 100 left. The stored header says someone else has 0 of 3.
    expect(bob.headers.ratelimit).toBe('"100-in-1m";r=99;t=60');
  });
});

describe('rateLimit mounted behind idempotency()', () => {
  it("a replay keeps the retry's own RateLimit header, not the first request's", async () => {
    const client = redis.client();
    const a = express();
    a.use(express.json());
    a.use(rateLimit({ redis: client, limit: 100, window: '1m', key: who, prefix: 'rl-app:' }));
    a.post(
      '/api/orders',
      idempotency({ redis: client, scope: who }),
      rateLimit({ redis: client, limit: 5, window: '1m', key: who, prefix: 'rl-orders:' }),
      (_req, res) => {
        res.status(201).json({ ok: true });
      },
    );
    const first = await request(a)
      .post('/api/orders')
      .set('x-client', 'alice')
      .set('Idempotency-Key', 'k1')
      .send({ n: 1 });
    expect(first.status).toBe(201);
    // Both limiters counted it, and both say so (README: two limiters report together).
    expect(first.headers.ratelimit).toMatch(/^"100-in-1m";r=99;t=\d+, "5-in-1m";r=4;/);
    const retry = await request(a)
      .post('/api/orders')
      .set('x-client', 'alice')
      .set('Idempotency-Key', 'k1')
      .send({ n: 1 });
    expect(retry.headers['idempotent-replayed']).toBe('true');
    // The retry was counted by the app-wide limiter (98 of 100 left); the replay shows the stored
    // header of the first request's order limiter instead.
    expect(retry.headers.ratelimit).toMatch(/^"100-in-1m";r=98;t=\d+$/);
  });
});
