import type { Express } from 'express';
import request from 'supertest';
import { createApp } from '../../demo-app/app';
import { useRedisServer } from '../helpers/redis';

describe('demo under a Redis that refuses writes', () => {
  const redis = useRedisServer();
  let app: Express;

  beforeAll(() => {
    app = createApp({
      redis: redis.client(),
      logger: false,
      catalogueLatencyMs: 0,
      sessionSecret: 'x'.repeat(40),
    });
  });
  afterAll(() => app.locals.close());
  afterEach(async () => {
    const admin = redis.plain();
    await admin.config('SET', 'maxmemory', '0');
    await admin.replicaof('NO', 'ONE');
  });

  const routes = [
    [
      'POST /api/leaderboard/:player',
      (a: Express) => request(a).post('/api/leaderboard/ada').send({ points: 3 }),
    ],
    [
      'POST /api/login',
      (a: Express) => request(a).post('/api/login').send({ username: 'ada', password: 'pw' }),
    ],
  ] as const;
  const refusals = [
    [
      'out of memory',
      async () => {
        const admin = redis.plain();
        await admin.config('SET', 'maxmemory-policy', 'noeviction');
        await admin.config('SET', 'maxmemory', '1');
      },
    ],
    // What the app's connection meets after a failover behind one address, until it reconnects.
    ['a read-only replica', () => redis.plain().replicaof('127.0.0.1', '1')],
  ] as const;

  it.each(
    routes.flatMap(([route, send]) => refusals.map(([state, make]) => [route, state, send, make] as const)),
  )('%s answers 503 with Retry-After when Redis is %s', async (_route, _state, send, make) => {
    await make();
    const res = await send(app);
    expect([res.status, res.headers['retry-after'], res.headers['content-type']]).toEqual([
      503,
      expect.any(String),
      expect.stringMatching(/problem\+json/),
    ]);
  });
});
