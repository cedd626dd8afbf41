import express from 'express';
import request from 'supertest';
import { createCache } from '../../lib/cache';
import { lockKeyOf, valueKey } from '../../lib/cache/key';
import { closeRedis } from '../../lib/connection';
import { idempotency } from '../../lib/idempotency';
import { rateLimit } from '../../lib/rate-limit';
import { quietLogger, sleep } from '../cache/helpers';
import { eventually, useRedisServer } from '../helpers/redis';

const redis = useRedisServer();

describe('closeRedis and work the kit has already given up on', () => {
  it('cache.wrap: a hung background refresh the kit let go of (refresh-slow) does not hold up closeRedis', async () => {
    const admin = redis.plain();
    const client = redis.client();
    const cache = createCache({
      redis: client,
      l1: false,
      jitter: 0,
      lockTimeout: '100ms',
      logger: quietLogger(),
    });
    const options = { ttl: 300, staleWhileRevalidate: '1m' };
    expect(await cache.wrap('k', async () => 'first', options)).toBe('first');
    await sleep(350);
    // Stale: served, and a background refresh starts with an fn that never settles.
    expect(await cache.wrap('k', () => new Promise<string>(() => {}), options)).toBe('first');
    const lock = lockKeyOf(valueKey('erk:', 'k'));
    await eventually(async () => (await admin.exists(lock)) === 1, 'the refresh to take the lock');
    await eventually(async () => (await admin.exists(lock)) === 0, 'the refresh to let go (refresh-slow)');
    await sleep(100);
    const started = performance.now();
    await closeRedis(client, { timeoutMs: 3000 });
    // Nothing is left for the kit to send: the lock is released, the refresh given up.
    expect(Math.round(performance.now() - started)).toBeLessThan(1000);
  });

  it('rateLimit: a requestWasSuccessful that never settles does not hold up every closeRedis', async () => {
    const client = redis.client();
    const app = express();
    app.get(
      '/',
      rateLimit({
        redis: client,
        limit: 5,
        window: '1m',
        skipFailedRequests: true,
        requestWasSuccessful: () => new Promise<boolean>(() => {}),
      }),
      (_req, res) => res.send('ok'),
    );
    await request(app).get('/').expect(200);
    await sleep(100);
    const started = performance.now();
    await closeRedis(client, { timeoutMs: 3000 });
    expect(Math.round(performance.now() - started)).toBeLessThan(1000);
  });
});

describe('closeRedis when Redis goes away while it waits', () => {
  it("stops waiting for the kit's work at once: that work cannot reach Redis any more", async () => {
    const client = redis.client();
    const app = express();
    let answer!: () => void;
    app.post('/orders', express.json(), idempotency({ redis: client }), (_req, res) => {
      answer = () => res.status(201).json({ ok: true });
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const { port } = server.address() as { port: number };
      const sent = fetch(`http://127.0.0.1:${port}/orders`, {
        method: 'POST',
        headers: { 'Idempotency-Key': 'gone-1', 'Content-Type': 'application/json' },
        body: '{}',
      }).catch(() => undefined);
      await eventually(() => answer !== undefined, 'the handler to run');
      const started = performance.now();
      const closing = closeRedis(client, { timeoutMs: 5000 });
      await sleep(200);
      await redis.server.kill();
      await closing;
      expect(Math.round(performance.now() - started)).toBeLessThan(1500);
      answer();
      await sent;
    } finally {
      server.closeAllConnections();
      server.close();
      await redis.server.restart();
    }
  });
});
