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

  const quiet = () => ({
    redis: redis.plain(),
    timeout: 5000,
    failMode: 'closed' as const,
    logger: { warn() {} },
  });

  it("a limiter with headers: false leaves the other limiter's headers alone", async () => {
    const o = quiet();
    const hidden = rateLimit({ ...o, limit: 2, window: '1m', headers: false, prefix: `h${Math.random()}:` });
    const shown = rateLimit({
      ...o,
      limit: 100,
      window: '1m',
      headers: 'draft-6',
      prefix: `p${Math.random()}:`,
    });
    const app = express();
    app.get('/', hidden, shown, (req, res) => {
      res.json(req.rateLimit);
    });
    await request(app).get('/').expect(200);
    const second = await request(app).get('/').expect(200);
    expect(second.headers['ratelimit-remaining']).toBe('98');
    // req.rateLimit still tells the handler about the hidden limit, the closer one.
    expect(second.body).toMatchObject({ limit: 2, remaining: 0 });
  });

  it("a dryRun limiter never replaces an enforcing limiter's headers or req.rateLimit, before or after it", async () => {
    const o = quiet();
    for (const order of ['trial first', 'trial last']) {
      const trial = rateLimit({
        ...o,
        limit: 1,
        window: '1m',
        dryRun: true,
        headers: 'legacy',
        prefix: `t${Math.random()}:`,
      });
      const real = rateLimit({
        ...o,
        limit: 100,
        window: '1m',
        headers: 'legacy',
        prefix: `r${Math.random()}:`,
      });
      const app = express();
      app.get('/', ...(order === 'trial first' ? [trial, real] : [real, trial]), (req, res) => {
        res.json(req.rateLimit);
      });
      await request(app).get('/').expect(200);
      const second = await request(app).get('/').expect(200);
      expect({ order, limit: second.headers['x-ratelimit-limit'], info: second.body.limit }).toEqual({
        order,
        limit: '100',
        info: 100,
      });
    }
  });

  it('limiters with the same policies share counters (README, Keys): a request through two counts in both', async () => {
    const o = { ...quiet(), limit: 10, window: '1m', prefix: `s${Math.random()}:` };
    const app = express();
    app.use(rateLimit(o));
    app.post('/export', rateLimit({ ...o, cost: 5 }), (req, res) => {
      res.json(req.rateLimit);
    });
    expect((await request(app).post('/export').expect(200)).body.remaining).toBe(4);
  });

  it('an enforcing limiter behind a dryRun one with the same policies still blocks', async () => {
    const o = { ...quiet(), limit: 2, window: '1m', prefix: `d${Math.random()}:` };
    const app = express();
    app.use(rateLimit({ ...o, dryRun: true }));
    app.get('/login', rateLimit(o), (_req, res) => {
      res.end('ok');
    });
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await request(app).get('/login')).status);
    expect(statuses).toContain(429);
  });

  it('ranks headers among limiters of one mode: with a legacy and a draft-7 limiter, each family shows its own', async () => {
    const o = quiet();
    const old = rateLimit({ ...o, limit: 2, window: '1m', headers: 'legacy', prefix: `l${Math.random()}:` });
    const fresh = rateLimit({
      ...o,
      limit: 100,
      window: '1m',
      headers: 'draft-7',
      prefix: `d7${Math.random()}:`,
    });
    const app = express();
    app.get('/', old, fresh, (req, res) => {
      res.json(req.rateLimit);
    });
    await request(app).get('/').expect(200);
    const second = await request(app).get('/').expect(200);
    expect({
      legacy: second.headers['x-ratelimit-remaining'],
      draft7: second.headers.ratelimit,
      info: second.body.limit,
    }).toEqual({
      legacy: '0',
      draft7: expect.stringMatching(/^limit=100, remaining=98, reset=\d+$/),
      info: 2,
    });
  });

  it('keeps both limiters in RateLimit-Policy when draft-6 and draft-7 (one syntax) both write it', async () => {
    const o = quiet();
    const a = rateLimit({ ...o, limit: 2, window: '1m', headers: 'draft-6', prefix: `a${Math.random()}:` });
    const b = rateLimit({ ...o, limit: 100, window: '1m', headers: 'draft-7', prefix: `b${Math.random()}:` });
    const app = express();
    app.get('/', a, b, (_req, res) => {
      res.end();
    });
    const res = await request(app).get('/').expect(200);
    expect(res.headers['ratelimit-policy']).toBe('2;w=60, 100;w=60');
  });
});

describe('rateLimit() after express-rate-limit on one route (a migration, route by route)', () => {
  it("draft-8: the list headers keep express-rate-limit's entries and add the kit's after them", async () => {
    const { rateLimit: expressRateLimit } = await import('express-rate-limit');
    const peer = expressRateLimit({
      windowMs: 60_000,
      limit: 10,
      standardHeaders: 'draft-8',
      legacyHeaders: false,
      identifier: 'legacy-10',
    });
    const kit = rateLimit({
      redis: redis.plain(),
      key: () => `after-peer-${process.pid}`,
      limit: 5,
      window: '1m',
      timeout: 5000,
      prefix: `after-peer:${Math.random()}:`,
    });
    const app = express();
    app.get('/', peer, kit, (_req, res) => {
      res.send('ok');
    });
    const answer = await request(app).get('/').expect(200);
    expect(answer.headers['ratelimit-policy']).toMatch(
      /^"legacy-10"; q=10; w=60; pk=[^,]+, "5-in-1m";q=5;w=60$/,
    );
    expect(answer.headers.ratelimit).toMatch(/^"legacy-10"; r=9; t=\d+, "5-in-1m";r=4;t=\d+$/);
  });
});
