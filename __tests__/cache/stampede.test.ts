import express from 'express';
import type { CacheResponseOptions } from '../../lib/cache';
import { cacheResponse } from '../../lib/cache';
import { decodeEntry } from '../../lib/cache/entry';
import { entryKey, lockKeyOf } from '../../lib/cache/key';
import { captureEvents } from '../helpers/events';
import { useRedisServer } from '../helpers/redis';
import { listen, quietLogger, sleep, waitForKeys } from './helpers';

const redis = useRedisServer();
const servers: Array<{ close(): Promise<void> }> = [];
// Set-up and checks go through a plain client: the kit's 500 ms command timeout is for the request
// path, and on a loaded CI machine it can fire before a test's FLUSHALL reply is read.
const admin = () => redis.plain();

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

/** One "app instance": its own Redis client (so its own L1, bus and lock view) and HTTP server. */
async function instance(
  origin: { calls: number; delayMs: number },
  options: Partial<CacheResponseOptions> = {},
) {
  const client = redis.client();
  const mw = cacheResponse({ redis: client, ttl: '1m', logger: quietLogger(), ...options });
  await mw.cache.ready();
  const app = express();
  app.get('/slow', mw, async (_req, res) => {
    origin.calls++;
    await sleep(origin.delayMs);
    res.json({ built: origin.calls });
  });
  const server = await listen(app);
  servers.push(server);
  return { ...server, client, mw };
}

describe('stampede protection', () => {
  it('runs the origin once for 200 concurrent cold requests spread over two instances', async () => {
    const origin = { calls: 0, delayMs: 300 };
    const a = await instance(origin);
    const b = await instance(origin);
    await admin().flushall();
    const responses = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const res = await fetch(`${i % 2 ? a.url : b.url}/slow?page=1`);
        return { status: res.status, xcache: res.headers.get('x-cache'), body: await res.json() };
      }),
    );
    expect(origin.calls).toBe(1);
    for (const res of responses) {
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ built: 1 });
    }
    expect(responses.filter((r) => r.xcache === 'MISS')).toHaveLength(1);
    expect(responses.filter((r) => r.xcache === 'HIT')).toHaveLength(199);
  });

  it('lets waiters proceed after lockTimeout when the lock holder died', async () => {
    const origin = { calls: 0, delayMs: 0 };
    const a = await instance(origin, { lockTimeout: 600, l1: false });
    await admin().flushall();
    // A "dead" holder: its lock is there, but nobody will ever fill the entry or release it.
    const lock = lockKeyOf(entryKey('erk:', 'GET /slow'));
    await admin().set(lock, 'dead-holder-token', 'PX', 600);
    const started = Date.now();
    const [first, second] = await Promise.all([fetch(`${a.url}/slow`), fetch(`${a.url}/slow`)]);
    expect(first.status).toBe(200);
    expect(second.status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(400);
    expect(origin.calls).toBe(1);
    expect(await admin().get(lock)).toBeNull();
  });

  it('lets requests on other instances run an uncacheable origin side by side instead of one at a time', async () => {
    const origin = { running: 0, most: 0, calls: 0 };
    const events = captureEvents('cache');
    const instances = await Promise.all(
      Array.from({ length: 4 }, async () => {
        const client = redis.client();
        const mw = cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() });
        const app = express();
        app.get('/missing', mw, async (_req, res) => {
          origin.calls++;
          origin.running++;
          origin.most = Math.max(origin.most, origin.running);
          await sleep(300);
          origin.running--;
          res.status(404).send('not found');
        });
        const server = await listen(app);
        servers.push(server);
        return { ...server, client };
      }),
    );
    try {
      await admin().flushall();
      const all = await Promise.all(instances.map((i) => fetch(`${i.url}/missing`)));
      expect(all.map((r) => r.status)).toEqual([404, 404, 404, 404]);
      expect(origin.calls).toBe(4);
      // One instance finds out it is uncacheable; the three that waited on its lock then run together.
      expect(origin.most).toBeGreaterThanOrEqual(3);
      const [marker] = await admin().keys('erk:c:*:nostore');
      expect(marker).toBeDefined();
      expect(await admin().pttl(marker!)).toBeGreaterThan(0);
      // While the marker lives, a new request does not queue behind a lock.
      const waits = events.count('lock-wait');
      const again = await Promise.all(instances.map((i) => fetch(`${i.url}/missing`)));
      expect(again.map((r) => r.status)).toEqual([404, 404, 404, 404]);
      expect(events.count('lock-wait')).toBe(waits);
      expect(origin.most).toBeGreaterThanOrEqual(4);
    } finally {
      events.stop();
    }
  });

  it('spreads the fresh lifetime by ±jitter', async () => {
    const client = redis.client();
    await client.flushall();
    const mw = cacheResponse({ redis: client, ttl: 100_000, jitter: 0.1, l1: false });
    const app = express();
    app.get('/j/:id', mw, (req, res) => {
      res.send(req.params.id);
    });
    const server = await listen(app);
    servers.push(server);
    await Promise.all(Array.from({ length: 40 }, (_, i) => fetch(`${server.url}/j/${i}`)));
    const keys = await waitForKeys(client, 'erk:c:*', 40);
    const fresh = await Promise.all(keys.map(async (k) => decodeEntry((await client.getBuffer(k))!).freshMs));
    for (const ms of fresh) {
      expect(ms).toBeGreaterThanOrEqual(90_000);
      expect(ms).toBeLessThanOrEqual(110_000);
    }
    expect(new Set(fresh).size).toBeGreaterThan(10);
  });
});
