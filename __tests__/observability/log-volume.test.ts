import express from 'express';
import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import { rateLimit } from '../../lib/rate-limit';
import { quietLogger, sleep } from '../cache/helpers';
import { useUnhandledRejections } from '../helpers/process';
import { useRedisServer } from '../helpers/redis';

const redis = useRedisServer();

describe('log volume during a Redis outage', () => {
  it('invalidates() logs a failed invalidation once per outage, not once per write or route', async () => {
    const client = redis.client();
    const logger = quietLogger();
    const mw = cacheResponse({ redis: client, ttl: '1m', timeout: 100, l1: false, logger });
    const app = express();
    app.put(
      '/p/:id',
      mw.invalidates((req) => [`product:${req.params.id}`]),
      (_req, res) => res.send('saved'),
    );
    app.put(
      '/q/:id',
      mw.invalidates((req) => [`other:${req.params.id}`]),
      (_req, res) => res.send('saved'),
    );
    await client.ping();
    await redis.server.kill();
    try {
      for (let i = 0; i < 10; i++) {
        await request(app).put(`/p/${i}`).expect(200);
        await request(app).put(`/q/${i}`).expect(200);
      }
      await sleep(100);
      expect(logger.warnings.map((w) => w.message)).toEqual([
        expect.stringMatching(/invalidation incomplete/),
      ]);
    } finally {
      await redis.server.restart();
    }
  });
});

describe('a logger that fails', () => {
  const unhandled = useUnhandledRejections();

  it('an async logger whose warn rejects costs only its line (no unhandled rejection)', async () => {
    const client = redis.client();
    const app = express();
    let called = 0;
    app.use(
      rateLimit({
        redis: client,
        limit: 5,
        window: '1m',
        timeout: 50,
        logger: {
          warn: async () => {
            called++;
            throw new Error('log shipper down');
          },
        },
      }),
    );
    app.get('/', (_req, res) => res.send('ok'));
    await client.ping();
    await redis.server.kill();
    try {
      await request(app).get('/').expect(200); // fails open, warns
      await sleep(50);
      expect(called).toBe(1);
      expect(unhandled).toEqual([]);
    } finally {
      await redis.server.restart();
    }
  });
});
