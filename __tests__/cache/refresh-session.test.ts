import express from 'express';
import helmet from 'helmet';
import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { redisSession } from '../../lib/session';
import { quietLogger, sleep, waitForKeys } from '../cache/helpers';
import { useFlushedClient, useRedisServer } from '../helpers/redis';

const redis = useRedisServer();
let admin: RedisClient;
useFlushedClient(redis, (c) => {
  admin = c;
});

// The README's app: redisSession app-wide, a shared (catalogue) route cached with sessionCookie: false
// so logged-in visitors are served the shared entry, staleWhileRevalidate for background refreshes.
describe('staleWhileRevalidate refresh triggered by a logged-in visitor, redisSession in front', () => {
  it('stores the refresh (no Set-Cookie on it): fresh hits after one STALE, one origin call for the refresh', async () => {
    const client = redis.client();
    const sessions = redisSession({ redis: client, secret: 's'.repeat(40) });
    const a = express();
    a.use(helmet());
    a.use(sessions);
    let price = 10;
    let runs = 0;
    a.get(
      '/api/price',
      cacheResponse({
        redis: client,
        ttl: 1000,
        staleWhileRevalidate: '1m',
        sessionCookie: false,
        l1: false,
        logger: quietLogger(),
      }),
      (_req, res) => {
        runs++;
        res.json({ price });
      },
    );
    a.post('/login', async (req, res) => {
      await sessions.login(req, { userId: 'u1' });
      res.json({ ok: true });
    });
    const user = request.agent(a);
    await user.post('/login');

    expect((await request(a).get('/api/price')).body).toEqual({ price: 10 });
    await waitForKeys(admin, 'erk:c:*', 1);
    price = 12;
    await sleep(1100); // past ttl, within staleWhileRevalidate

    const seen: Array<{ cache: string; price: number }> = [];
    for (let i = 0; i < 4; i++) {
      const r = await user.get('/api/price');
      seen.push({ cache: String(r.headers['x-cache']), price: r.body.price });
      await sleep(100); // each background refresh has long finished
    }
    // One refresh, stored: the first read is STALE, the next ones are fresh hits with the new price,
    // and the origin ran twice in all (the fill and the refresh).
    expect({ seen, runs }).toEqual({
      seen: [
        { cache: 'STALE', price: 10 },
        { cache: 'HIT', price: 12 },
        { cache: 'HIT', price: 12 },
        { cache: 'HIT', price: 12 },
      ],
      runs: 2,
    });
  });
});
