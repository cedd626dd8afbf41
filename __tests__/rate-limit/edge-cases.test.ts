import express from 'express';
import request from 'supertest';
import { type RateLimitOptions, rateLimit } from '../../lib/rate-limit';
import { captureEvents } from '../helpers/events';
import { eventually, useRedisServer } from '../helpers/redis';
import { sleep } from './fixtures/http';

type Limiter = ReturnType<typeof rateLimit>;

/** A handler that answers `?status=` at once, or waits for `release(name)` when given `?hold=name`. */
function holdingApp(limiter: Limiter) {
  const gates = new Map<string, () => void>();
  const app = express();
  app.get('/', limiter, async (req, res) => {
    const hold = req.query.hold;
    if (typeof hold === 'string') await new Promise<void>((resolve) => gates.set(hold, resolve));
    res.status(Number(req.query.status ?? 200)).json(req.rateLimit ?? null);
  });
  return {
    app,
    release: (name: string) => {
      gates.get(name)!();
    },
    held: (name: string) => gates.has(name),
  };
}

const byClient = (req: express.Request) => String(req.headers['x-client'] ?? 'anonymous');

const stopCapture: Array<() => void> = [];
afterEach(() => {
  for (const stop of stopCapture.splice(0)) stop();
});

/** holdingApp, plus the limiter's kit events (to wait for refunds), stopped after the test. */
function refundApp(limiter: Limiter) {
  const { waitFor, stop } = captureEvents('rate-limit');
  stopCapture.push(stop);
  return { ...holdingApp(limiter), waitFor };
}

/** GET / behind `mw`; errors passed to next() are collected and answered 500. */
function appCollectingErrors(mw: express.RequestHandler) {
  const errors: Error[] = [];
  const app = express();
  app.get('/', mw, (_req, res) => {
    res.json({ ok: true });
  });
  app.use((error: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    errors.push(error);
    res.status(500).json({ error: 'cost' });
  });
  return { app, errors };
}

describe('rateLimit edge cases', () => {
  const redis = useRedisServer();
  const limiter = (options: Omit<RateLimitOptions, 'redis'>) =>
    rateLimit({ key: byClient, timeout: 5000, failMode: 'closed', ...options, redis: redis.plain() });

  describe('a cost function answering more than the limit', () => {
    it.each(['fixed-window', 'sliding-window', 'token-bucket', 'gcra'] as const)(
      'goes to the error handler naming the option, and counts nothing (%s)',
      async (algorithm) => {
        const mw = limiter({
          limit: 10,
          window: '1m',
          algorithm,
          name: `big-${algorithm}`,
          cost: (req) => Number(req.query.cost),
        });
        const { app, errors } = appCollectingErrors(mw);
        // 1e18 does not even survive Lua's number formatting: it must never reach Redis.
        for (const cost of [11, 1e18]) {
          expect((await request(app).get(`/?cost=${cost}`).set('x-client', 'big')).status).toBe(500);
        }
        expect(errors.map((e) => e.message)).toEqual([
          expect.stringMatching(/option "cost" returned 11, more than the limit \(10\)/),
          expect.stringMatching(/option "cost" returned 1000000000000000000, more than the limit/),
        ]);
        expect(errors[0]).toBeInstanceOf(RangeError);
        expect((await mw.get('big')).used).toBe(0);
        expect(await redis.plain().keys(`erk:rl:big-${algorithm}:*`)).toEqual([]);
        // The full limit is still there for requests that fit.
        expect((await request(app).get('/?cost=10').set('x-client', 'big')).status).toBe(200);
      },
    );
  });

  it('a cost function answering a number out of range is a RangeError, anything else a TypeError, and nothing is counted', async () => {
    const mw = limiter({
      limit: 10,
      window: '1m',
      name: 'cost-kind',
      cost: (req) => (req.query.cost === 'text' ? '2' : Number(req.query.cost)) as number,
    });
    const { app, errors } = appCollectingErrors(mw);
    for (const cost of ['0', '-1', '1.5', 'NaN', 'text']) {
      expect((await request(app).get(`/?cost=${cost}`).set('x-client', 'kind')).status).toBe(500);
    }
    expect(errors.map((e) => e.constructor.name)).toEqual([
      'RangeError',
      'RangeError',
      'RangeError',
      'RangeError',
      'TypeError',
    ]);
    expect((await mw.get('kind')).used).toBe(0);
  });

  it('a throw after an asynchronous key (headers already sent by a timeout) reaches the error handler', async () => {
    const mw = limiter({
      limit: 1,
      window: '1h',
      name: 'async-throw',
      key: async (req) => {
        await sleep(30);
        return byClient(req);
      },
    });
    const errors: Array<{ code?: string }> = [];
    const app = express();
    // Stands in for a request-timeout middleware that answers while the limiter still works.
    app.get(
      '/',
      (req, res, next) => {
        if (req.query.early) setTimeout(() => res.status(503).send('timed out'), 5);
        next();
      },
      mw,
      (_req, res) => {
        if (!res.headersSent) res.send('ok');
      },
    );
    app.use(
      (
        error: { code?: string },
        _req: express.Request,
        res: express.Response,
        next: express.NextFunction,
      ) => {
        errors.push(error);
        if (res.headersSent) return next(error);
        res.status(500).end();
      },
    );
    expect((await request(app).get('/').set('x-client', 'at')).status).toBe(200);
    expect((await request(app).get('/').set('x-client', 'at')).status).toBe(429);
    // Now a deny-cache hit, whose header writes come after the 503 went out.
    expect((await request(app).get('/?early=1').set('x-client', 'at')).status).toBe(503);
    await eventually(() => errors.length === 1, 'the error to reach the error handler');
    expect(errors[0]!.code).toBe('ERR_HTTP_HEADERS_SENT');
  });

  describe('refunds', () => {
    // limit 2 per 4 s: a token (or emission interval) comes back every 2 s, so after 2.1 s the slow
    // request's cost has healed on its own and giving it back again would be a gift. D comes well
    // within the next 2 s, even on a slow machine.
    it.each(['token-bucket', 'gcra'] as const)(
      'give back only what time has not already healed (%s)',
      async (algorithm) => {
        const mw = limiter({
          limit: 2,
          window: '4s',
          algorithm,
          name: `heal-${algorithm}`,
          skipFailedRequests: true,
        });
        const { app, release, held, waitFor } = refundApp(mw);
        const slow = request(app)
          .get('/?hold=a&status=500')
          .set('x-client', 'heal')
          .then((r) => r.status);
        await eventually(() => held('a'), 'the slow request to be counted');
        await sleep(2100);
        expect((await request(app).get('/').set('x-client', 'heal')).status).toBe(200);
        expect((await request(app).get('/').set('x-client', 'heal')).status).toBe(200);
        release('a');
        expect(await slow).toBe(500);
        await waitFor('refund', 1);
        // Without the slow request, B and C used the whole burst just now: D must wait ~2 s.
        expect((await request(app).get('/').set('x-client', 'heal')).status).toBe(429);
      },
    );

    // limit 10 per 10 s (a unit comes back every second), cost 5. X and A are counted back to back;
    // X is refunded at once, and 3 s later D (cost 5) passes. A was counted with X ahead of it, but X
    // no longer counts: without X and A the bucket was full at D and now holds 5. A's refund must not
    // give back the 5 it would have held had X stayed (that would leave 8).
    it.each(['token-bucket', 'gcra'] as const)(
      'a refund after an earlier request’s refund gives back only what it still holds (%s)',
      async (algorithm) => {
        const mw = limiter({
          limit: 10,
          window: '10s',
          algorithm,
          name: `order-${algorithm}`,
          skipFailedRequests: true,
          cost: (req) => Number(req.query.cost ?? 1),
        });
        const { app, release, held, waitFor } = refundApp(mw);
        const slow = (name: string) =>
          request(app)
            .get(`/?hold=${name}&status=500&cost=5`)
            .set('x-client', 'order')
            .then((r) => r.status);
        const x = slow('x');
        await eventually(() => held('x'), 'X to be counted');
        const a = slow('a');
        await eventually(() => held('a'), 'A to be counted');
        release('x');
        expect(await x).toBe(500);
        await waitFor('refund', 1);
        await sleep(3000);
        const d = await request(app).get('/?cost=5').set('x-client', 'order');
        expect(d.status).toBe(200);
        const afterD = (d.body as { remaining: number }).remaining;
        expect(afterD).toBeGreaterThanOrEqual(3);
        release('a');
        expect(await a).toBe(500);
        await waitFor('refund', 2);
        // afterD + 2 right after D, one more per second since (slack for a slow machine); the old
        // refund left at least afterD + 5.
        const { remaining } = await mw.get('order');
        expect(remaining).toBeGreaterThanOrEqual(5);
        expect(remaining).toBeLessThanOrEqual(afterD + 4);
      },
    );

    it.each(['fixed-window', 'sliding-window', 'token-bucket', 'gcra'] as const)(
      'a request counted before reset() gives nothing back to the fresh quota (%s)',
      async (algorithm) => {
        const mw = limiter({
          limit: 5,
          window: '1h',
          algorithm,
          name: `reset-refund-${algorithm}`,
          skipFailedRequests: true,
        });
        const { app, release, held, waitFor } = refundApp(mw);
        const x = request(app)
          .get('/?hold=x&status=500')
          .set('x-client', 'rr')
          .then((r) => r.status);
        await eventually(() => held('x'), 'X to be counted');
        await mw.reset('rr');
        expect((await request(app).get('/').set('x-client', 'rr')).status).toBe(200);
        const before = await mw.get('rr');
        expect(before.used).toBe(1);
        release('x');
        expect(await x).toBe(500);
        await waitFor('refund', 1);
        // Also the time until whole: gcra would still read "1 used" after giving back all but
        // the few ms since X was counted, yet be whole again in those few ms.
        const after = await mw.get('rr');
        expect(after.used).toBe(1);
        expect(after.resetMs).toBeGreaterThan(before.resetMs - 60_000);
      },
    );

    it.each(['fixed-window', 'sliding-window', 'token-bucket', 'gcra'] as const)(
      'clear this instance’s remembered denial, so the quota they give back is usable at once (%s)',
      async (algorithm) => {
        const mw = limiter({
          limit: 2,
          window: '1h',
          algorithm,
          name: `deny-refund-${algorithm}`,
          skipFailedRequests: true,
          coalesce: false,
        });
        const { app, release, held, waitFor } = refundApp(mw);
        const a = request(app)
          .get('/?hold=a&status=500')
          .set('x-client', 'dr')
          .then((r) => r.status);
        const b = request(app)
          .get('/?hold=b&status=500')
          .set('x-client', 'dr')
          .then((r) => r.status);
        await eventually(() => held('a') && held('b'), 'both slow requests to be counted');
        // Denied, and remembered in the deny cache.
        expect((await request(app).get('/').set('x-client', 'dr')).status).toBe(429);
        release('a');
        release('b');
        expect([await a, await b]).toEqual([500, 500]);
        await waitFor('refund', 2);
        expect((await mw.get('dr')).used).toBe(0);
        expect((await request(app).get('/').set('x-client', 'dr')).status).toBe(200);
      },
    );
  });
});
