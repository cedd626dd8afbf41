import express from 'express';
import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import { closeRedis, createRedis } from '../../lib/connection';
import { redisSession } from '../../lib/session';
import { useRedisServer } from '../helpers/redis';
import { proxyPort, startTcpProxy } from '../helpers/tcp-proxy';

const redis = useRedisServer();
const quiet = { warn: () => {} };

// README, "When Redis is sick": the budgets differ (rateLimit 250 ms, sessions 500 ms), and a slow
// Redis must not open the breaker that would answer the sessions 503 while it still answers within
// theirs. With auto-pipelining (createRedis's default) a call made while the previous batch awaits
// its reply waits for it: up to two round trips, so 200 ms is within the sessions' budget, and a
// Redis answering in 300 ms needs auto-pipelining off.
describe.each([
  ['200 ms, createRedis() defaults (auto-pipelining on)', 200, {}],
  ['300 ms, enableAutoPipelining false', 300, { enableAutoPipelining: false }],
])('a Redis that answers in %s, session + cache on one client', (_label, delayMs, extra) => {
  it('logged-in requests never get the session 503', async () => {
    const proxy = await startTcpProxy(redis.server.port, { delayMs });
    const client = createRedis({ url: `redis://127.0.0.1:${proxyPort(proxy)}`, logger: false, ...extra });
    try {
      await new Promise((r) => client.once('ready', r));
      const sessions = redisSession({ redis: client, secret: 'k'.repeat(40) });
      const app = express();
      app.use(sessions);
      app.use(cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quiet }));
      app.post('/login', async (req, res) => {
        await sessions.login(req, { userId: 'u' });
        res.json({ ok: true });
      });
      app.get('/me', (req, res) => res.json({ user: req.session.userId ?? null }));
      app.get('/public', (_req, res) => res.json({ ok: 1 }));
      const login = await request(app).post('/login').timeout(10000).expect(200);
      const cookie = (login.headers['set-cookie'] as unknown as string[])[0]!.split(';')[0]!;
      const got: string[] = [];
      for (let round = 0; round < 3; round++) {
        const rs = await Promise.all([
          ...Array.from({ length: 4 }, () => request(app).get('/me').set('Cookie', cookie).timeout(5000)),
          ...Array.from({ length: 4 }, () => request(app).get('/public').timeout(5000)),
        ]);
        got.push(
          ...rs.map((r, i) => `${i < 4 ? '/me' : '/public'} ${r.status} ${r.body?.detail ?? ''}`.trim()),
        );
      }
      expect(got.filter((g) => !g.includes(' 200'))).toEqual([]);
    } finally {
      await closeRedis(client, { timeoutMs: 100 });
      proxy.close();
    }
  }, 30_000);
});
