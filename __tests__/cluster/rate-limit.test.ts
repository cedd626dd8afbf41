import express from 'express';
import type { Cluster } from 'ioredis';
import request from 'supertest';
import { type RateLimitOptions, rateLimit } from '../../lib/rate-limit';
import { captureEvents } from '../helpers/events';
import { useRedisCluster } from '../helpers/redis';

describe('rateLimit on a real Redis Cluster', () => {
  const redis = useRedisCluster();
  const connect = () => redis.plain();

  const policies: RateLimitOptions['policies'] = [
    { limit: 12, window: '1h', algorithm: 'fixed-window', name: 'fw' },
    { limit: 13, window: '1h', algorithm: 'sliding-window', name: 'sw' },
    { limit: 14, window: '1h', algorithm: 'token-bucket', name: 'tb' },
    { limit: 10, window: '1h', algorithm: 'gcra', name: 'gc' },
  ];

  function app(client: Cluster) {
    const limiter = rateLimit({
      redis: client,
      policies,
      key: (req) => String(req.headers['x-client']),
      name: 'cl',
    });
    const a = express();
    a.get('/', limiter, (req, res) => {
      res.json(req.rateLimit);
    });
    return { app: a, limiter };
  }

  it('runs every algorithm in one script per request and allows exactly the tightest limit across two clients', async () => {
    const one = app(connect());
    const two = app(connect());
    // Several client keys, so their hash tags spread over the three masters.
    for (const client of ['alice', 'bob', 'carol', 'dave']) {
      const responses = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          request(i % 2 ? one.app : two.app)
            .get('/')
            .set('x-client', client),
        ),
      );
      expect(responses.filter((r) => r.status === 200)).toHaveLength(10);
      const state = await one.limiter.get(client);
      expect(state.policies.map((p) => p.used)).toEqual([10, 10, 10, 10]);
    }
  });

  it('reset(key) clears the client on the cluster', async () => {
    const { app: a, limiter } = app(connect());
    for (let i = 0; i < 10; i++) await request(a).get('/').set('x-client', 'erin');
    expect((await request(a).get('/').set('x-client', 'erin')).status).toBe(429);
    await limiter.reset('erin');
    expect((await limiter.get('erin')).used).toBe(0);
    expect((await request(a).get('/').set('x-client', 'erin')).status).toBe(200);
  });

  it('gives back failed requests on the cluster (the refund marker shares the client hash tag)', async () => {
    const events = captureEvents('rate-limit');
    try {
      const limiter = rateLimit({
        redis: connect(),
        policies,
        key: (req) => String(req.headers['x-client']),
        name: 'cl-refund',
        skipFailedRequests: true,
      });
      const a = express();
      a.get('/', limiter, (req, res) => {
        res.status(req.query.fail ? 500 : 200).json(req.rateLimit);
      });
      for (const client of ['alice', 'bob', 'carol', 'dave']) {
        expect((await request(a).get('/?fail=1').set('x-client', client)).status).toBe(500);
        await events.waitFor('refund', 1);
        expect(events.count('refund-failed')).toBe(0);
        expect((await limiter.get(client)).policies.map((p) => p.used)).toEqual([0, 0, 0, 0]);
        events.events.length = 0;
      }
    } finally {
      events.stop();
    }
  });
});
