import express from 'express';
import { cacheResponse } from '../../lib/cache';
import { closeRedis } from '../../lib/connection';
import { idempotency } from '../../lib/idempotency';
import { rateLimit } from '../../lib/rate-limit';
import { redisSession } from '../../lib/session';
import { useRedisServer } from '../helpers/redis';
import { send, sleep, useServers } from '../idempotency/http';

// closeRedis has run (the README recipe) while a load balancer still sends requests: each middleware
// must answer per its fail mode at once, never hang, never leak a stack trace.
const redis = useRedisServer();
const servers = useServers();

it('every middleware answers per its fail mode, during and after closeRedis', async () => {
  const client = redis.client();
  const app = express();
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown) => unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  app.use(redisSession({ redis: client, secret: 'x'.repeat(32) }));
  app.get('/limited', rateLimit({ redis: client, limit: 100, window: '1m' }), (_req, res) => res.send('ok'));
  app.get(
    '/strict',
    rateLimit({ redis: client, limit: 100, window: '1m', failMode: 'closed' }),
    (_req, res) => res.send('ok'),
  );
  app.get('/cached', cacheResponse({ redis: client, ttl: '1m' }), (_req, res) => res.json({ fresh: true }));
  app.post('/orders', express.json(), idempotency({ redis: client }), (_req, res) =>
    res.status(201).json({}),
  );
  app.post('/login', async (req, res, next) => {
    try {
      (req.session as unknown as Record<string, unknown>).user = 'u1';
      res.send('in');
    } catch (e) {
      next(e);
    }
  });
  const url = await servers.listen(app);
  const wave = (tag: string) =>
    Promise.all([
      send(`${url}/limited`, { method: 'GET', timeoutMs: 3000 }),
      send(`${url}/strict`, { method: 'GET', timeoutMs: 3000 }),
      send(`${url}/cached`, { method: 'GET', timeoutMs: 3000 }),
      send(`${url}/orders`, { key: `${tag}-k`, body: {}, timeoutMs: 3000 }),
      send(`${url}/login`, { body: {}, timeoutMs: 3000 }),
    ]);
  await wave('before');
  const started = Date.now();
  const during = wave('during');
  const closing = closeRedis(client, { timeoutMs: 1000 });
  const duringAnswers = await during;
  await closing;
  const after = await wave('after');
  const tookMs = Date.now() - started;
  process.off('unhandledRejection', onUnhandled);
  const summary = (answers: Awaited<ReturnType<typeof wave>>) =>
    answers.map((a) =>
      `${a.status} ${a.headers.get('content-type')?.split(';')[0]} ${a.headers.get('x-cache') ?? ''}`.trim(),
    );
  for (const a of [...duringAnswers, ...after]) expect(a.body.toString()).not.toMatch(/\bat .*\.(js|ts):\d+/);
  expect(summary(after)).toEqual([
    '200 text/html', // rateLimit failMode 'open'
    '503 application/problem+json', // rateLimit failMode 'closed'
    '200 application/json HIT', // cache: the copy this instance's L1 holds (README, cache fail mode)
    '503 application/problem+json', // idempotency failMode 'closed'
    '503 application/problem+json', // session write
  ]);
  expect(unhandled).toEqual([]);
  expect(tookMs).toBeLessThan(2500);
  await sleep(10);
});
