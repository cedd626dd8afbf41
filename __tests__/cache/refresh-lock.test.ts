import express, { type Express } from 'express';
import request from 'supertest';
import { cacheResponse, createCache } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { captureEvents } from '../helpers/events';
import { useFlushedClient, useRedisServer } from '../helpers/redis';
import { sleep } from './helpers';

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

/** A route entry fresh for 200 ms, then served stale while it is refreshed in the background. */
const STALE_AFTER_200MS = { ttl: 200, jitter: 0, staleWhileRevalidate: '1m', l1: false as const };

/**
 * Stores the origin's v1 at `path`, waits until it is stale, moves the origin on (`toV2`), and asks
 * again: the answer is the stale entry, and a background refresh starts.
 */
async function goStale(app: Express, path: string, toV2: () => void): Promise<void> {
  expect((await request(app).get(path)).text).toBe('v1');
  await sleep(300);
  toV2();
  expect((await request(app).get(path)).headers['x-cache']).toBe('STALE');
}

// A background refresh holds the fill lock while its replay goes through the app, and gives the route
// 3 × lockTimeout to answer. Cases:
// - the longest lockTimeout accepted (2^31-1 ms): the deadline's timer, past Node's longest, fired
//   after 1 ms, and no refresh ever succeeded;
// - a middleware in front of the cache slower than lockTimeout (an auth call): the lock, renewed only
//   once the replay reached the cache, expired, and the refreshed answer was refused.
describe.each([
  ['lockTimeout 1m', 60_000, 0],
  ['lockTimeout 9d (the longest is 2^31-1 ms)', 9 * 24 * 3600 * 1000, 0],
  ['lockTimeout 1s, behind a 150 ms middleware', 1000, 150],
  ['lockTimeout 100ms (the shortest accepted), behind a 150 ms middleware', 100, 150],
])('background refresh, %s', (_label, lockTimeout, beforeMs) => {
  it('refreshes the stale entry, with no warning', async () => {
    const warnings: string[] = [];
    let version = 1;
    const app = express();
    app.use(async (_req, _res, next) => {
      if (beforeMs) await sleep(beforeMs);
      next();
    });
    app.get(
      '/r',
      cacheResponse({
        redis: client,
        ...STALE_AFTER_200MS,
        lockTimeout,
        logger: {
          warn: (d: unknown, m: string) =>
            warnings.push(`${m} ${String((d as { err?: Error }).err?.message)}`),
        },
      }),
      async (_req, res) => {
        await sleep(50);
        res.send(`v${version}`);
      },
    );
    await goStale(app, '/r', () => {
      version = 2;
    });
    await sleep(400 + beforeMs);
    const after = await request(app).get('/r');
    expect({ text: after.text, warnings }).toEqual({ text: 'v2', warnings: [] });
  });
});

it('a background refresh that loses its lock while the route runs reports lock-lost once (one renewal once the cache took it over)', async () => {
  let version = 1;
  const app = express();
  app.get(
    '/r',
    cacheResponse({
      redis: client,
      ...STALE_AFTER_200MS,
      lockTimeout: 300,
      name: 'loses-its-lock',
      logger: { warn() {} },
    }),
    async (_req, res) => {
      if (version === 2) await sleep(600); // the refresh's origin: slower than lockTimeout
      res.send(`v${version}`);
    },
  );
  const events = captureEvents('cache');
  try {
    await goStale(app, '/r', () => {
      version = 2;
    });
    await sleep(50); // refresh now inside the route
    const admin = redis.plain();
    const locks = await admin.keys('*:lock');
    expect(locks.length).toBe(1);
    await admin.del(...locks); // expired / taken by an invalidation
    await sleep(900);
    // This cache's only: a refresh an earlier test's last request started may lose its lock to the flush.
    expect(events.events.filter((e) => e.type === 'lock-lost' && e.name === 'loses-its-lock')).toHaveLength(
      1,
    );
  } finally {
    events.stop();
  }
});

it("another cacheResponse in front (an app-wide one) passes the replay on: the route's cache takes its refresh over, and its lock stays renewed", async () => {
  let version = 1;
  const app = express();
  app.use(
    cacheResponse({
      redis: client,
      prefix: 'front:',
      l1: false,
      name: 'front',
      ttl: '1m',
      shouldCache: () => false,
    }),
  );
  app.use(async (_req, _res, next) => {
    await sleep(150);
    next();
  });
  app.get(
    '/r',
    cacheResponse({
      redis: client,
      prefix: 'route:',
      ...STALE_AFTER_200MS,
      lockTimeout: 100,
      name: 'route',
      logger: { warn() {} },
    }),
    async (_req, res) => {
      await sleep(50);
      res.send(`v${version}`);
    },
  );
  const events = captureEvents('cache');
  try {
    await goStale(app, '/r', () => {
      version = 2;
    });
    await sleep(800);
    const after = await request(app).get('/r');
    const lost = events.events.filter((e) => e.type === 'lock-lost').map((e) => e.name);
    expect({ text: after.text, lost }).toEqual({ text: 'v2', lost: [] });
  } finally {
    events.stop();
  }
});

it("one shared cache, one key, two cacheResponse: the one in front (which passed the request over) leaves the route's refresh to the route's", async () => {
  const cache = createCache({ redis: client, l1: false, lockTimeout: 1000, logger: { warn() {} } });
  let version = 1;
  const app = express();
  // App-wide: keyed on ?page= only, and storing nothing itself; it passes ?utm= requests over.
  app.use(cacheResponse({ cache, ttl: '1m', query: ['page'], shouldCache: () => false }));
  app.get('/r', cacheResponse({ cache, ttl: 200, jitter: 0, staleWhileRevalidate: '1m' }), (_req, res) => {
    res.send(`v${version}`);
  });
  await goStale(app, '/r?utm=x', () => {
    version = 2;
  });
  await sleep(150);
  const after = await request(app).get('/r?utm=x');
  expect({ text: after.text, cache: after.headers['x-cache'] }).toEqual({ text: 'v2', cache: 'HIT' });
});
