import express from 'express';
import type { Redis } from 'ioredis';
import { cacheResponse, createCache } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { heartbeat } from '../../lib/pubsub';
import { listen, quietLogger, sleep } from './helpers';

// App instances with an L1 whose invalidation channel the tests cut (l1-deaf*.test.ts): each has its
// own client, a cacheResponse on GET /price (tag `price`) answering `db.price`.

export function useDeafFixture() {
  const closers: Array<() => Promise<unknown>> = [];
  const db = { price: 1 };
  afterEach(async () => {
    while (closers.length) await closers.pop()!().catch(() => {});
  });

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

  /** Status, X-Cache and price of one request. */
  async function read(url: string, headers: Record<string, string> = {}, method = 'GET') {
    const res = await fetch(url, { headers, method });
    const text = await res.text();
    return {
      status: res.status,
      cache: res.headers.get('x-cache'),
      price: text && res.status === 200 ? (JSON.parse(text) as { price: number }).price : undefined,
    };
  }

  /** Reads until the instance answers from its L1 (the fill's store lands after the response). */
  async function untilHit(url: string): Promise<void> {
    for (let i = 0; i < 200; i++) {
      if ((await read(url)).cache === 'HIT') return;
      await sleep(10);
    }
    throw new Error('never a HIT');
  }

  return { closers, db, instance, read, untilHit };
}

/**
 * Cuts every pub/sub connection and keeps them from coming back (`maxclients` leaves room for the
 * others only), for `check`; then lets them back.
 */
export async function withSubscribersRefused(admin: Redis, check: () => Promise<void>): Promise<void> {
  await admin.ping();
  const subscribers = String(await admin.call('CLIENT', 'LIST', 'TYPE', 'pubsub'))
    .trim()
    .split('\n').length;
  const connected = Number(/connected_clients:(\d+)/.exec(await admin.info('clients'))![1]);
  const [, maxclients] = (await admin.config('GET', 'maxclients')) as [string, string];
  await admin.config('SET', 'maxclients', String(connected - subscribers));
  try {
    await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
    await check();
  } finally {
    await admin.call('CLIENT', 'UNPAUSE').catch(() => {});
    await admin.config('SET', 'maxclients', maxclients);
  }
}

/** A pub/sub heartbeat of 100 ms + 150 ms for the tests of this block (default 5 s + 5 s). */
export function useShortHeartbeat(): void {
  const saved = { ...heartbeat };
  beforeEach(() => {
    Object.assign(heartbeat, { everyMs: 100, timeoutMs: 150 });
  });
  afterEach(() => {
    Object.assign(heartbeat, saved);
  });
}

/** Pauses Redis for `ms`, long past the short heartbeat (the subscriber is dropped), for `check`. */
export async function whilePaused(admin: Redis, check: () => Promise<void>, ms = 2500): Promise<void> {
  await admin.ping();
  await admin.call('CLIENT', 'PAUSE', String(ms), 'ALL');
  try {
    await sleep(700);
    await check();
  } finally {
    await admin.call('CLIENT', 'UNPAUSE').catch(() => {});
  }
}
