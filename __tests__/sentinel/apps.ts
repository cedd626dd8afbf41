import express from 'express';
import type request from 'supertest';
import { cacheResponse, createCache } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { pingRedis } from '../../lib/health';
import { idempotency } from '../../lib/idempotency';
import { rateLimit } from '../../lib/rate-limit';
import { redisSession } from '../../lib/session';

/**
 * One Express app with every middleware on `redis`: /limited (rate limit, 1000/h, key "alice"),
 * /cached/:id (cacheResponse with L1, origin counts its calls), POST /orders (idempotency),
 * /login + /me (sessions), /healthz (pingRedis).
 */
export function kitApp(redis: RedisClient, prefix = 'erk:') {
  const origin = { calls: 0, version: 'v1' };
  let orders = 0;
  const limiter = rateLimit({
    redis,
    prefix,
    limit: 1000,
    window: '1h',
    algorithm: 'fixed-window',
    key: () => 'alice',
    logger: { warn() {} },
  });
  const shared = createCache({ redis, prefix, logger: { warn() {} } });
  const cache = cacheResponse({ cache: shared, ttl: '5m' });
  const sessions = redisSession({ redis, prefix, secret: 'x'.repeat(32), cookie: { secure: false } });
  const app = express();
  app.use(express.json());
  app.get('/limited', limiter, (req, res) => {
    res.json({ remaining: req.rateLimit?.remaining ?? null });
  });
  app.get('/cached/:id', cache, (req, res) => {
    origin.calls++;
    res.json({ id: req.params.id, version: origin.version });
  });
  app.post('/cached/:id/invalidate', async (req, res) => {
    await cache.invalidate({ keys: [`GET /cached/${req.params.id}`] });
    res.json({ ok: true });
  });
  app.post('/orders', idempotency({ redis, prefix }), (_req, res) => {
    orders++;
    res.status(201).json({ order: orders });
  });
  app.use(sessions);
  app.post('/login', async (req, res) => {
    await sessions.login(req, { userId: String(req.body?.user ?? 'u1') });
    res.json({ ok: true });
  });
  app.get('/me', (req, res) => {
    res.json({ userId: (req.session as { userId?: string }).userId ?? null });
  });
  app.get('/healthz', async (_req, res) => {
    const h = await pingRedis(redis);
    res.status(h.ok ? 200 : 503).json(h);
  });
  app.use(sessions.handleErrors);
  return { app, origin, limiter, cache, shared, sessions, orders: () => orders };
}

export type KitApp = ReturnType<typeof kitApp>;

/** One request with a hard client-side limit: a hang shows as status 0. */
export async function timed(
  test: request.Test,
  limitMs = 5000,
): Promise<{ status: number; ms: number; body: unknown; text: string; headers: Record<string, string> }> {
  const started = Date.now();
  try {
    const res = await test.timeout(limitMs);
    return {
      status: res.status,
      ms: Date.now() - started,
      body: res.body,
      text: res.text,
      headers: res.headers,
    };
  } catch (error) {
    return { status: 0, ms: Date.now() - started, body: null, text: String(error), headers: {} };
  }
}
