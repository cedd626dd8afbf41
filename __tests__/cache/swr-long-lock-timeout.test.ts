import express from 'express';
import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { useFlushedClient, useRedisServer } from '../helpers/redis';
import { sleep } from './helpers';

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

// A background refresh gives the route 3 × lockTimeout to answer, through a timer: lockTimeout is
// accepted up to 2^31-1 ms, and Node fires a timer longer than that after 1 ms.
describe.each([
  ['1m', 60_000],
  ['9d (valid: max is 2^31-1 ms)', 9 * 24 * 3600 * 1000],
])('background refresh with lockTimeout %s', (_label, lockTimeout) => {
  it('a route that answers in 50 ms refreshes the stale entry', async () => {
    const warnings: string[] = [];
    let version = 1;
    const app = express();
    app.get(
      '/r',
      cacheResponse({
        redis: client,
        ttl: 200,
        jitter: 0,
        staleWhileRevalidate: '1m',
        l1: false,
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
    expect((await request(app).get('/r')).text).toBe('v1');
    await sleep(300);
    version = 2;
    expect((await request(app).get('/r')).headers['x-cache']).toBe('STALE');
    await sleep(400);
    const after = await request(app).get('/r');
    expect({ text: after.text, warnings }).toEqual({ text: 'v2', warnings: [] });
  });
});
