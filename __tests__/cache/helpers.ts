import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type Express, type RequestHandler } from 'express';
import type { Redis } from 'ioredis';
import request from 'supertest';
import { type CacheResponseOptions, cacheResponse } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import type { RateLimitMiddleware } from '../../lib/rate-limit';
import { captureEvents } from '../helpers/events';

/** Listens on a free loopback port; `close()` also drops keep-alive connections. */
export async function listen(app: Express): Promise<{ url: string; close: () => Promise<void> }> {
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until Redis holds at least `count` keys matching `pattern` (stores happen after the response). */
export async function waitForKeys(
  client: { keys(pattern: string): Promise<string[]> },
  pattern: string,
  count = 1,
  timeoutMs = 3000,
): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const keys = await client.keys(pattern);
    if (keys.length >= count) return keys;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${count} key(s) matching ${pattern}`);
    await sleep(10);
  }
}

/** A logger that records warnings instead of printing them. */
export function quietLogger() {
  const warnings: Array<{ details: object; message: string }> = [];
  return { warnings, warn: (details: object, message: string) => warnings.push({ details, message }) };
}

/** Stored entries (and Vary markers/variants), leaving out fill locks and no-store markers. */
export async function entryKeys(client: { keys(pattern: string): Promise<string[]> }): Promise<string[]> {
  return (await client.keys('erk:c:*')).filter((k) => !k.endsWith(':lock') && !k.endsWith(':nostore'));
}

/**
 * Records the commands clients send from now on (not the calls inside scripts), through MONITOR on
 * `plain`, a client of its own; `stop()` ends it.
 */
export async function watchCommands(plain: Redis): Promise<{ seen: string[]; stop(): void }> {
  const monitor = await plain.monitor();
  const seen: string[] = [];
  monitor.on('monitor', (_time: string, args: string[], source: string) => {
    if (source !== 'lua') seen.push(String(args[0]).toLowerCase());
  });
  await sleep(50); // MONITOR reports only once it has settled in
  return { seen, stop: () => monitor.disconnect() };
}

/** A cache whose entries go stale after 300 ms and are then refreshed in the background for a minute. */
export function staleAfter300ms(redis: RedisClient, l1: CacheResponseOptions['l1'] = false) {
  return cacheResponse({ redis, ttl: 300, jitter: 0, staleWhileRevalidate: '1m', l1, logger: quietLogger() });
}

/**
 * GET /r behind `limiter` (key 'client'), then `cache` (an entry stale after 300 ms, with
 * stale-while-revalidate): the cache's background refresh runs through the app, limiter included,
 * and must not be charged to the client.
 */
export async function expectRefreshUncharged(limiter: RateLimitMiddleware, cache: RequestHandler) {
  const app = express();
  app.use(limiter);
  app.get('/r', cache, (_req, res) => {
    res.send('page');
  });
  const events = captureEvents('cache');
  try {
    expect((await request(app).get('/r')).headers['x-cache']).toBe('MISS');
    await events.waitFor('store', 1);
    await new Promise((r) => setTimeout(r, 400));
    expect((await request(app).get('/r')).headers['x-cache']).toBe('STALE');
    await events.waitFor('store', 2); // the refresh ran through the app, limiter included
    expect((await limiter.get('client')).used).toBe(2);
    expect((await request(app).get('/r')).status).toBe(200);
  } finally {
    events.stop();
  }
}

/** GETs `path` until the response says `x-cache: HIT` (stores land after the response). */
export async function untilHit(app: Express, path: string, set: Record<string, string> = {}) {
  const deadline = Date.now() + 3000;
  for (;;) {
    const res = await request(app).get(path).set(set);
    if (res.headers['x-cache'] === 'HIT') return res;
    if (Date.now() > deadline)
      throw new Error(`${path} never became a HIT (last: ${res.headers['x-cache']})`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A product route that reads its value when the request starts and answers 200 ms later, plus a
 * write route that changes the value and invalidates the tag: the classic read/write race.
 */
export function productApp(client: RedisClient) {
  const state = { value: 'v1', onRead: () => {} };
  const products = cacheResponse({
    redis: client,
    ttl: '1m',
    l1: false,
    tags: () => ['product'],
    logger: quietLogger(),
  });
  const app = express();
  app.get('/product', products, async (_req, res) => {
    const read = state.value;
    state.onRead();
    await sleep(200);
    res.json({ value: read });
  });
  app.put(
    '/product',
    products.invalidates(() => ['product']),
    (_req, res) => {
      state.value = 'v2';
      res.json({ ok: true });
    },
  );
  return { app, products, state };
}

/**
 * Starts a GET that reads the value now and answers later; resolves (with its answer to come) once
 * the handler has read the value: a fixed wait was too short on a loaded machine.
 */
export async function startSlowRead(app: express.Express, state: { onRead: () => void }) {
  const read = new Promise<void>((resolve) => {
    state.onRead = resolve;
  });
  const answer = request(app)
    .get('/product')
    .then((res) => res); // supertest sends on then()
  await read;
  return { answer };
}
