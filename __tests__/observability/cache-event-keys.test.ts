import express from 'express';
import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { quietLogger } from '../cache/helpers';
import { captureEvents } from '../helpers/events';
import { useFlushedClient, useRedisServer } from '../helpers/redis';

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

describe('cacheResponse events name their entry so they can be joined', () => {
  it("a request's miss and hit carry the Redis key its store event names", async () => {
    const events = captureEvents('cache');
    try {
      const app = express();
      app.get(
        '/r',
        cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() }),
        (_q, res) => res.send('x'),
      );
      await request(app).get('/r?b=2&a=1').expect(200);
      await events.waitFor('store', 1);
      await request(app).get('/r?a=1&b=2').expect(200);
      const miss = events.events.find((e) => e.type === 'miss')!;
      const store = events.events.find((e) => e.type === 'store')!;
      const hit = events.events.find((e) => e.type === 'hit')!;
      expect(store.key).toMatch(/^erk:c:/);
      expect(miss).toMatchObject({ key: 'GET /r?a=1&b=2', redisKey: store.key });
      expect(hit).toMatchObject({ key: 'GET /r?a=1&b=2', redisKey: store.key });
    } finally {
      events.stop();
    }
  });
});
