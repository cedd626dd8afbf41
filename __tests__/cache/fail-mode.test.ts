import express from 'express';
import Redis from 'ioredis';
import request from 'supertest';
import { configureBreaker } from '../../lib/breaker';
import { cacheResponse, createCache } from '../../lib/cache';
import { freePort } from '../../lib/testing';
import { useUnhandledRejections } from '../helpers/process';
import { useRedisServer } from '../helpers/redis';
import { quietLogger, sleep, waitForKeys } from './helpers';

const redis = useRedisServer();

function setup() {
  const client = redis.client();
  configureBreaker(client, { cooldownMs: 200 });
  const mw = cacheResponse({ redis: client, ttl: '1m', timeout: 100, l1: false, logger: quietLogger() });
  let calls = 0;
  const app = express();
  app.get('/r', mw, (_req, res) => {
    calls++;
    res.send(`origin ${calls}`);
  });
  return { app, client, calls: () => calls };
}

describe('when Redis is sick', () => {
  it('bypasses to the origin with X-Cache: BYPASS when Redis is paused, within the timeout', async () => {
    const { app, client, calls } = setup();
    // Until stored: the first calls also connect and load the scripts, which on a busy machine may
    // take longer than the 100 ms timeout (that request is then a BYPASS).
    await waitFor(async () => {
      await request(app).get('/r');
      return (await client.keys('erk:c:*')).length > 0;
    });
    const admin = redis.plain();
    await admin.call('CLIENT', 'PAUSE', '1500', 'ALL');
    try {
      const started = Date.now();
      const before = calls();
      const res = await request(app).get('/r');
      expect(res.status).toBe(200);
      expect(res.headers['x-cache']).toBe('BYPASS');
      expect(res.text).toBe(`origin ${before + 1}`);
      expect(Date.now() - started).toBeLessThan(1400);
      const cache = createCache({ redis: client, timeout: 100, l1: false });
      expect(await cache.wrap('k', () => 'computed', { ttl: '1m' })).toBe('computed');
    } finally {
      await sleep(1600);
    }
    // Back to normal once Redis answers again (after the breaker's cool-down).
    await sleep(300);
    await request(app).get('/r');
    expect((await request(app).get('/r')).headers['x-cache']).toBe('HIT');
    expect(calls()).toBeGreaterThanOrEqual(2);
  });

  it('answers a failing origin with the stale copy L1 still holds within staleIfError, as cache.wrap() does', async () => {
    const client = redis.client();
    configureBreaker(client, { cooldownMs: 200 });
    const mw = cacheResponse({
      redis: client,
      ttl: 100,
      jitter: 0,
      staleIfError: '1m',
      timeout: 100,
      l1: { max: 10 },
      logger: quietLogger(),
    });
    await mw.cache.ready();
    let failing = false;
    const app = express();
    app.get('/sie', mw, (_req, res) => {
      if (failing) throw new Error('database down');
      res.set('X-Origin', 'ok').send('good');
    });
    expect((await request(app).get('/sie')).headers['x-cache']).toBe('MISS');
    await waitForKeys(client, 'erk:c:*');
    await sleep(200);
    const admin = redis.plain();
    await admin.call('CLIENT', 'PAUSE', '1500', 'ALL');
    try {
      // The origin works: it answers, the cache stays out of the way.
      expect((await request(app).get('/sie')).headers['x-cache']).toBe('BYPASS');
      failing = true;
      for (const headers of [{}, { 'Cache-Control': 'no-store' }]) {
        const res = await request(app).get('/sie').set(headers);
        expect([res.status, res.headers['x-cache'], res.text]).toEqual([200, 'STALE', 'good']);
        expect(res.headers['x-origin']).toBe('ok');
      }
    } finally {
      await sleep(1600);
    }
  });

  it('bypasses to the origin when Redis is killed, and caches again after it is back', async () => {
    const { app, client: first, calls } = setup();
    await first.flushall();
    await request(app).get('/r');
    await redis.server.kill();
    try {
      for (let i = 0; i < 8; i++) {
        const started = Date.now();
        const res = await request(app).get('/r');
        expect(res.status).toBe(200);
        expect(res.headers['x-cache']).toBe('BYPASS');
        expect(Date.now() - started).toBeLessThan(1000);
      }
      expect(calls()).toBe(9);
    } finally {
      await redis.server.restart();
    }
    const client = redis.client();
    await waitFor(async () => (await request(app).get('/r')).headers['x-cache'] === 'MISS');
    await waitForKeys(client, 'erk:c:*');
    expect((await request(app).get('/r')).headers['x-cache']).toBe('HIT');
  });
});

describe('cache.wrap when Redis is sick', () => {
  it('gives each coalesced caller its own copy of the value fn returned', async () => {
    const cache = createCache({ redis: redis.client(), timeout: 50, l1: false, logger: quietLogger() });
    await redis.plain().call('CLIENT', 'PAUSE', '400', 'ALL');
    try {
      let calls = 0;
      const fn = async () => {
        calls++;
        await sleep(20);
        return { items: [1, 2] };
      };
      const [a, b, c] = await Promise.all([1, 2, 3].map(() => cache.wrap('shared', fn, { ttl: '1m' })));
      expect(calls).toBe(1);
      a!.items.push(99);
      expect(b).not.toBe(c);
      expect(b).toEqual({ items: [1, 2] });
      expect(c).toEqual({ items: [1, 2] });
    } finally {
      await sleep(450);
    }
  });
});

async function waitFor(check: () => Promise<boolean>, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(100);
  }
}

describe('a logger that throws', () => {
  const unhandled = useUnhandledRejections();

  it('costs the log line only: a write whose invalidation fails still answers at once', async () => {
    const client = redis.client();
    const mw = cacheResponse({
      redis: client,
      ttl: '1m',
      timeout: 1000,
      l1: false,
      logger: {
        warn: () => {
          throw new Error('logger transport closed');
        },
      },
    });
    // A closed client refuses every command at once: the invalidation fails and warns.
    await client.quit();
    const app = express();
    app.put(
      '/p',
      mw.invalidates(() => ['product:1']),
      (_req, res) => {
        res.send('saved');
      },
    );
    const started = Date.now();
    const res = await request(app).put('/p').timeout(5000);
    expect(res.status).toBe(200);
    expect(res.text).toBe('saved');
    // Not held for the invalidation's whole budget (3 × timeout) by the failed warning.
    expect(Date.now() - started).toBeLessThan(1500);
    await sleep(20);
    expect(unhandled).toEqual([]);
  });
});

describe('closing while Redis is unreachable', () => {
  it('close() returns at once instead of waiting for the invalidation subscription to give up', async () => {
    const port = await freePort();
    const client = redis.track(new Redis({ port, host: '127.0.0.1', lazyConnect: true }));
    client.on('error', () => {});
    const cache = createCache({ redis: client, logger: quietLogger() });
    const started = Date.now();
    await cache.close();
    expect(Date.now() - started).toBeLessThan(500);
  });
});
