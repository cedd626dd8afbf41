import express from 'express';
import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { captureEvents } from '../helpers/events';
import { useFlushedClient, useRedisServer } from '../helpers/redis';
import { sleep } from './helpers';

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

// An auth or session middleware of 150 ms in front of cacheResponse: a background refresh takes the
// fill lock before the replay goes through it, and must renew it from then on.
describe.each([
  ['1s', 1000],
  ['100ms (the shortest accepted)', 100],
])('background refresh behind a 150 ms middleware, lockTimeout %s', (_label, lockTimeout) => {
  it('refreshes the stale entry', async () => {
    let version = 1;
    let runs = 0;
    const app = express();
    app.use(async (_req, _res, next) => {
      await sleep(150);
      next();
    });
    app.get(
      '/r',
      cacheResponse({
        redis: client,
        ttl: 200,
        jitter: 0,
        staleWhileRevalidate: '1m',
        l1: false,
        lockTimeout,
        logger: { warn() {} },
      }),
      (_req, res) => {
        runs++;
        res.send(`v${version}`);
      },
    );
    const events = captureEvents('cache');
    try {
      expect((await request(app).get('/r')).text).toBe('v1');
      await sleep(300);
      version = 2;
      expect((await request(app).get('/r')).headers['x-cache']).toBe('STALE');
      await sleep(600);
      const after = await request(app).get('/r');
      expect({ text: after.text, runs }).toEqual({ text: 'v2', runs: 2 });
    } finally {
      events.stop();
    }
  });
});
