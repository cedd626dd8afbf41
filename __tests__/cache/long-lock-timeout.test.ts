import express from 'express';
import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import { useRedisServer } from '../helpers/redis';
import { quietLogger } from './helpers';

const redis = useRedisServer();

describe('cacheResponse with the longest lockTimeout (2^31 - 1 ms)', () => {
  it('still coalesces concurrent misses: their wait is capped at what a timer can hold', async () => {
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => {});
    const client = redis.client();
    await client.flushall();
    const cache = cacheResponse({
      redis: client,
      ttl: '1m',
      lockTimeout: 2 ** 31 - 1,
      logger: quietLogger(),
    });
    let runs = 0;
    const app = express();
    app.get('/slow', cache, async (_req, res) => {
      runs += 1;
      await new Promise((r) => setTimeout(r, 200));
      res.json({ runs });
    });
    try {
      await Promise.all([request(app).get('/slow').expect(200), request(app).get('/slow').expect(200)]);
      expect({
        runs,
        overflow: warn.mock.calls.some(([, o]) => String(o).includes('TimeoutOverflow')),
      }).toEqual({
        runs: 1,
        overflow: false,
      });
    } finally {
      warn.mockRestore();
      await cache.cache.close();
    }
  });
});
