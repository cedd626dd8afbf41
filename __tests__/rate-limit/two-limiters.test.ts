import express from 'express';
import request from 'supertest';
import { type RateLimitOptions, rateLimit } from '../../lib/rate-limit';
import { useRedisServer } from '../helpers/redis';

const redis = useRedisServer();

/** A route behind a burst limiter (2 per minute) and then an hourly one (100 per hour). */
function twoLimiters(headers: RateLimitOptions['headers']) {
  const client = redis.plain();
  const key = () => `client-${headers}-${process.pid}`;
  const options = { redis: client, key, headers, timeout: 5000, failMode: 'closed' } as const;
  const burst = rateLimit({ ...options, limit: 2, window: '1m', prefix: `burst:${Math.random()}:` });
  const hourly = rateLimit({ ...options, limit: 100, window: '1h', prefix: `hourly:${Math.random()}:` });
  const app = express();
  app.get('/search', burst, hourly, (req, res) => {
    res.json(req.rateLimit);
  });
  return app;
}

describe('two rateLimit() middlewares on one route', () => {
  it('draft-8: both headers list both limiters, and req.rateLimit is the one closer to denying', async () => {
    const app = twoLimiters('draft-8');
    await request(app).get('/search').expect(200);
    const second = await request(app).get('/search').expect(200);
    expect(second.headers['ratelimit-policy']).toBe('"2-in-1m";q=2;w=60, "100-in-1h";q=100;w=3600');
    expect(second.headers.ratelimit).toMatch(/^"2-in-1m";r=0;t=\d+, "100-in-1h";r=98;t=\d+$/);
    expect(second.body).toMatchObject({ policy: '2-in-1m', remaining: 0, limit: 2 });
    const denied = await request(app).get('/search').expect(429);
    expect(denied.headers.ratelimit).toMatch(/^"2-in-1m";r=0;t=\d+$/);
  });

  it('the binding one wins whichever comes last: the hourly limiter first, nearly spent', async () => {
    const client = redis.plain();
    const key = () => `order-${process.pid}`;
    const options = { redis: client, key, timeout: 5000, failMode: 'closed' } as const;
    const tight = rateLimit({ ...options, limit: 3, window: '1h', prefix: `tight:${Math.random()}:` });
    const loose = rateLimit({ ...options, limit: 50, window: '1m', prefix: `loose:${Math.random()}:` });
    const app = express();
    app.get('/', tight, loose, (req, res) => {
      res.json(req.rateLimit);
    });
    await request(app).get('/').expect(200);
    const second = await request(app).get('/').expect(200);
    expect(second.body).toMatchObject({ policy: '3-in-1h', remaining: 1 });
    expect(second.headers.ratelimit).toMatch(/^"3-in-1h";r=1;t=\d+, "50-in-1m";r=48;t=\d+$/);
  });

  it.each([
    ['draft-7', (h: Record<string, string>) => h.ratelimit],
    ['draft-6', (h: Record<string, string>) => `remaining=${h['ratelimit-remaining']}`],
    ['legacy', (h: Record<string, string>) => `remaining=${h['x-ratelimit-remaining']}`],
  ] as const)('%s: the single-value headers report the limiter closer to denying', async (mode, read) => {
    const app = twoLimiters(mode);
    await request(app).get('/search').expect(200);
    const second = await request(app).get('/search').expect(200);
    expect(read(second.headers)).toMatch(/remaining=0\b/);
    if (mode !== 'legacy') expect(second.headers['ratelimit-policy']).toBe('2;w=60, 100;w=3600');
  });
});
