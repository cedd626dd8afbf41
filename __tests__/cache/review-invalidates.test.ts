import express from 'express';
import type Redis from 'ioredis';
import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { idempotency } from '../../lib/idempotency';
import { captureEvents } from '../helpers/events';
import { useUnhandledRejections } from '../helpers/process';
import { eventually, useRedisServer } from '../helpers/redis';
import { entryKeys, quietLogger, sleep, waitForKeys } from './helpers';

const redis = useRedisServer();
const unhandled = useUnhandledRejections();
let admin: Redis;
beforeAll(() => {
  admin = redis.plain();
});
beforeEach(async () => {
  await admin.flushall();
});

describe('invalidates() when the route ends with something Node refuses', () => {
  it('answers 500 through Express, as without invalidates(), and rejects nothing unhandled', async () => {
    const mw = cacheResponse({ redis: redis.client(), ttl: '1m', logger: quietLogger() });
    const app = express();
    const route: express.RequestHandler = (_req, res) => {
      res.status(200).end(42 as unknown as string);
    };
    app.put('/plain', route);
    app.put(
      '/p',
      mw.invalidates(() => ['p']),
      route,
    );
    expect((await request(app).put('/plain')).status).toBe(500);
    const res = await request(app).put('/p').timeout(3000);
    expect(res.status).toBe(500);
    await sleep(50);
    expect(unhandled).toEqual([]);
  });

  it('destroys the response when the deferred end throws, instead of an unhandled rejection', async () => {
    const mw = cacheResponse({ redis: redis.client(), ttl: '1m', logger: quietLogger() });
    const app = express();
    app.put(
      '/p',
      mw.invalidates(() => ['p']),
      (_req, res) => {
        // Accepted as a chunk, but Node throws on the encoding only when end() really runs.
        res.status(200).end('x', 'no-such-encoding' as BufferEncoding);
      },
    );
    app.get('/ok', (_req, res) => {
      res.send('still up');
    });
    await request(app)
      .put('/p')
      .timeout(3000)
      .catch(() => undefined);
    await sleep(50);
    expect(unhandled).toEqual([]);
    expect((await request(app).get('/ok')).text).toBe('still up');
  });
});

describe('invalidates() while Redis is paused', () => {
  async function instance(client: RedisClient) {
    const origin = { version: 1 };
    const mw = cacheResponse({ redis: client, ttl: '10m', tags: () => ['p'], logger: quietLogger() });
    await mw.cache.ready();
    const app = express();
    app.get('/p', mw, (_req, res) => {
      res.json({ version: origin.version });
    });
    app.put(
      '/p',
      mw.invalidates(() => ['p']),
      (_req, res) => {
        origin.version++;
        res.json({ saved: true });
      },
    );
    await request(app).get('/p');
    await waitForKeys(admin, 'erk:t:*');
    await eventually(() => mw.cache.l1!.size === 1, 'the entry in L1');
    expect((await request(app).get('/p')).headers['x-cache']).toBe('HIT');
    return { app, mw };
  }

  const pause = (ms: number) => admin.call('CLIENT', 'PAUSE', String(ms), 'ALL');

  it('the same instance never serves the old entry from its L1 after the write answered', async () => {
    const { app } = await instance(redis.client());
    await pause(1200);
    try {
      const put = await request(app).put('/p');
      expect(put.status).toBe(200);
      const read = await request(app).get('/p');
      expect(read.headers['x-cache']).not.toBe('HIT');
      expect(read.body.version).toBe(2);
    } finally {
      await sleep(1300);
    }
  });

  it('holds the write for at most three times timeout, and the invalidation completes behind it', async () => {
    // A plain client has no commandTimeout: the invalidation's calls may wait out the pause.
    const { app } = await instance(redis.plain());
    const events = captureEvents('cache');
    await pause(1500);
    try {
      const started = Date.now();
      expect((await request(app).put('/p')).status).toBe(200);
      expect(Date.now() - started).toBeLessThan(1000);
      await events.waitFor('invalidate', 1);
      expect(await entryKeys(admin)).toEqual([]);
      const read = await request(app).get('/p');
      expect(read.headers['x-cache']).toBe('MISS');
      expect(read.body.version).toBe(2);
    } finally {
      events.stop();
      await sleep(100);
    }
  });

  it('invalidate() called directly still waits for a slow Redis rather than giving up', async () => {
    const { app, mw } = await instance(redis.plain());
    await pause(600);
    await mw.invalidate({ tags: ['p'] });
    expect(await entryKeys(admin)).toEqual([]);
    expect((await request(app).get('/p')).headers['x-cache']).toBe('MISS');
  });
});

describe('invalidates() when the route throws after answering', () => {
  const route: express.RequestHandler = (_req, res) => {
    res.status(201).json({ created: true });
    throw new Error('after the answer');
  };

  it('sends the 201 the write produced, as Express does without invalidates()', async () => {
    const mw = cacheResponse({ redis: redis.client(), ttl: '1m', logger: quietLogger() });
    const app = express();
    app.post('/plain', route);
    app.post(
      '/p',
      mw.invalidates(() => ['p']),
      route,
    );
    app.use(((_error, _req, res, _next) => {
      res.status(500).json({ error: 'late' });
    }) as express.ErrorRequestHandler);
    const plain = await request(app).post('/plain');
    expect([plain.status, plain.body]).toEqual([201, { created: true }]);
    const held = await request(app).post('/p');
    expect([held.status, held.body]).toEqual([201, { created: true }]);
  });

  it('lets idempotency() in front store the 201, so a retry replays it instead of writing again', async () => {
    const client = redis.client();
    const mw = cacheResponse({ redis: client, ttl: '1m', logger: quietLogger() });
    let writes = 0;
    const app = express();
    app.post(
      '/orders',
      idempotency({ redis: client }),
      mw.invalidates(() => ['orders']),
      (req, res, next) => {
        writes++;
        route(req, res, next);
      },
    );
    const first = await request(app).post('/orders').set('Idempotency-Key', 'k1');
    expect(first.status).toBe(201);
    const retry = await request(app).post('/orders').set('Idempotency-Key', 'k1');
    expect(retry.status).toBe(201);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(writes).toBe(1);
  });
});
