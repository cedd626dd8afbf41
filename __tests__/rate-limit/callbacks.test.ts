import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import Redis from 'ioredis';
import request from 'supertest';
import { type RateLimitOptions, rateLimit } from '../../lib/rate-limit';
import { freePort } from '../../lib/testing';
import { captureEvents } from '../helpers/events';
import { useUnhandledRejections } from '../helpers/process';
import { eventually, useRedisServer } from '../helpers/redis';
import { sleep } from './fixtures/http';

/**
 * The JavaScript around the scripts: user callbacks that throw or reject, responses that are over
 * before the decision comes back, and the deny cache racing reset() and refunds.
 */
describe('rateLimit around its decisions', () => {
  const redis = useRedisServer();
  const unhandled = useUnhandledRejections();
  const stops: Array<() => void> = [];
  afterEach(() => {
    for (const stop of stops.splice(0)) stop();
  });
  const events = () => {
    const capture = captureEvents('rate-limit');
    stops.push(capture.stop);
    return capture;
  };
  /** A key function that answers 'k' after `ms`: the decision arrives late. */
  const slowKey = (ms: number) => async () => {
    await sleep(ms);
    return 'k';
  };
  const limiter = (options: Omit<RateLimitOptions, 'redis'>) =>
    rateLimit({ timeout: 5000, ...options, redis: redis.plain() });

  function listen(app: express.Express): Promise<{ url: string; close: () => Promise<void> }> {
    return new Promise((resolve) => {
      const server = app.listen(0, '127.0.0.1', () => {
        const { port } = server.address() as AddressInfo;
        resolve({
          url: `http://127.0.0.1:${port}`,
          close: () =>
            new Promise<void>((done) => {
              server.closeAllConnections();
              server.close(() => done());
            }),
        });
      });
    });
  }

  it('sends the rejection of an async handler to the error handler instead of leaving the request hanging', async () => {
    const mw = limiter({
      limit: 1,
      window: '1m',
      name: 'async-handler',
      key: () => 'k',
      handler: async () => {
        await sleep(5);
        throw new Error('the template failed');
      },
    });
    const app = express();
    app.get('/', mw, (_req, res) => {
      res.send('ok');
    });
    app.use((error: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      res.status(500).json({ error: error.message });
    });
    expect((await request(app).get('/')).status).toBe(200);
    const denied = await request(app).get('/').timeout(2000);
    expect(denied.status).toBe(500);
    expect(denied.body).toEqual({ error: 'the template failed' });
    expect(unhandled).toEqual([]);
  });

  it('keeps the cost counted, and reports refund-failed, when requestWasSuccessful throws', async () => {
    const { waitFor, events: seen } = events();
    const mw = limiter({
      limit: 5,
      window: '1m',
      name: 'throwing-judge',
      key: () => 'k',
      skipSuccessfulRequests: true,
      requestWasSuccessful: () => {
        throw new Error('cannot judge');
      },
    });
    const app = express();
    app.get('/', mw, (_req, res) => {
      res.send('ok');
    });
    expect((await request(app).get('/')).status).toBe(200);
    await waitFor('refund-failed', 1);
    const failed = seen.find((e) => e.type === 'refund-failed') as { error?: unknown };
    expect(String(failed.error)).toMatch(/cannot judge/);
    expect((await mw.get('k')).used).toBe(1);
  });

  it.each<[string, () => Promise<boolean>, number]>([
    ['resolves false (a failed login)', async () => false, 0],
    [
      'resolves true after 30 ms',
      async () => {
        await sleep(30);
        return true;
      },
      1,
    ],
  ])(
    'waits for a requestWasSuccessful that answers a Promise, as express-rate-limit does: one that %s is judged by its value',
    async (_name, judge, used) => {
      const { waitFor } = events();
      const mw = limiter({
        limit: 5,
        window: '1m',
        name: `async-judge-${used}`,
        key: () => 'k',
        skipFailedRequests: true,
        requestWasSuccessful: judge,
      });
      const app = express();
      app.get('/', mw, (_req, res) => {
        res.send('ok');
      });
      expect((await request(app).get('/')).status).toBe(200);
      if (used === 0) await waitFor('refund', 1);
      else await sleep(150);
      expect((await mw.get('k')).used).toBe(used);
    },
  );

  it('keeps the cost counted, and reports refund-failed, when an async requestWasSuccessful rejects (no unhandled rejection)', async () => {
    const { waitFor, events: seen } = events();
    const mw = limiter({
      limit: 5,
      window: '1m',
      name: 'rejecting-judge',
      key: () => 'k',
      skipFailedRequests: true,
      requestWasSuccessful: async () => {
        throw new Error('lookup failed');
      },
    });
    const app = express();
    app.get('/', mw, (_req, res) => {
      res.status(401).send('no');
    });
    expect((await request(app).get('/')).status).toBe(401);
    await waitFor('refund-failed', 1);
    const failed = seen.find((e) => e.type === 'refund-failed') as { error?: unknown };
    expect(String(failed.error)).toMatch(/lookup failed/);
    expect((await mw.get('k')).used).toBe(1);
    expect(unhandled).toEqual([]);
  });

  it.each([
    ['skipFailedRequests', 500, 10],
    // A handler that answers in the same turn (a validation error, a cached answer) ended the
    // response before on-finished called back: it was judged by its status and refunded.
    ['skipFailedRequests', 500, 0],
    ['skipSuccessfulRequests', 200, 0],
  ] as const)(
    'keeps the cost of a client that broke off before its answer (%s, the handler answers %i after %i ms): breaking off is no way to get requests for free',
    async (option, status, delay) => {
      const seen = events();
      const mw = limiter({
        limit: 3,
        window: '1m',
        name: `left-early-${option}-${delay}`,
        [option]: true,
        // The client is gone before the decision, so the response's close already fired.
        key: slowKey(150),
      });
      let handled = 0;
      const app = express();
      app.get('/', mw, (_req, res) => {
        handled++;
        if (delay > 0) setTimeout(() => res.status(status).send('x'), delay);
        else res.status(status).send('x');
      });
      const server = await listen(app);
      try {
        for (let i = 0; i < 3; i++) {
          const gone = http.get(`${server.url}/`);
          gone.on('error', () => {});
          await sleep(30);
          gone.destroy();
        }
        await eventually(() => handled === 3, 'the handler to run for each');
        await sleep(100);
        expect(seen.count('refund')).toBe(0);
        expect((await mw.get('k')).used).toBe(3);
        // The limit holds: a fourth request is denied.
        expect((await request(app).get('/')).status).toBe(429);
      } finally {
        await server.close();
      }
    },
  );

  it('gives the cost back (skipFailedRequests) when a timeout middleware answered before the decision', async () => {
    const { waitFor } = events();
    const mw = limiter({
      limit: 3,
      window: '1m',
      name: 'answered-early',
      skipFailedRequests: true,
      key: slowKey(100),
    });
    const errors: Error[] = [];
    const app = express();
    app.use((_req, res, next) => {
      setTimeout(() => {
        if (!res.headersSent) res.status(503).send('timed out');
      }, 20);
      next();
    });
    app.get('/', mw, (_req, res) => {
      res.send('ok');
    });
    app.use((error: Error, _req: express.Request, _res: express.Response, _next: express.NextFunction) => {
      errors.push(error);
    });
    expect((await request(app).get('/')).status).toBe(503);
    await waitFor('refund', 1);
    expect((await mw.get('k')).used).toBe(0);
    // The late header write still reaches the error handler, as before.
    await eventually(() => errors.length === 1, 'the header error');
  });

  it('does not let a denial decided while reset() ran outlive the reset', async () => {
    const mw = limiter({
      limit: 2,
      window: '1h',
      name: 'reset-race',
      algorithm: 'fixed-window',
      key: () => 'k',
    });
    const app = express();
    app.get('/', mw, (_req, res) => {
      res.send('ok');
    });
    const server = await listen(app);
    const admin = redis.plain();
    try {
      expect((await fetch(server.url)).status).toBe(200);
      expect((await fetch(server.url)).status).toBe(200);
      // The third decision is sent before reset()'s DEL and answered before it: a denial.
      await admin.call('CLIENT', 'PAUSE', '300', 'WRITE');
      const inFlight = fetch(server.url);
      await sleep(50);
      await mw.reset('k');
      expect((await inFlight).status).toBe(429);
      expect((await mw.get('k')).used).toBe(0);
      const after = await fetch(server.url);
      expect(after.status).toBe(200);
    } finally {
      await server.close();
    }
  });

  it("remembers a client's denial although another client's refund went out while it was decided", async () => {
    const seen = events();
    const mw = limiter({
      limit: 1,
      window: '1h',
      name: 'other-refund',
      algorithm: 'fixed-window',
      key: (req) => String(req.headers['x-client']),
      skipFailedRequests: true,
    });
    let fail: (() => void) | undefined;
    const app = express();
    app.get('/', mw, (req, res) => {
      if (!req.query.hold) {
        res.send('ok');
        return;
      }
      fail = () => res.status(500).send('failed');
    });
    const server = await listen(app);
    const admin = redis.plain();
    const as = (client: string, path = '/') => fetch(server.url + path, { headers: { 'x-client': client } });
    try {
      expect((await as('b')).status).toBe(200);
      const held = as('a', '/?hold=1');
      await eventually(() => fail !== undefined, 'the held request');
      // b's denial is sent, then a's refund, both held by the pause and answered in that order.
      await admin.call('CLIENT', 'PAUSE', '300', 'WRITE');
      const denied = as('b');
      await sleep(50);
      fail!();
      expect((await held).status).toBe(500);
      expect((await denied).status).toBe(429);
      await eventually(() => seen.events.some((e) => e.type === 'refund' && e.key === 'a'), "a's refund");
      expect((await as('b')).status).toBe(429);
      expect(seen.events.filter((e) => e.type === 'deny-cache-hit').map((e) => e.key)).toEqual(['b']);
      // a got its quota back.
      expect((await as('a')).status).toBe(200);
    } finally {
      await server.close();
    }
  });

  it('twelve stacked limiters with refunds share one pair of response listeners, and each gives back', async () => {
    const stack = Array.from({ length: 12 }, (_, i) =>
      limiter({ limit: 1, window: '1h', name: `stacked-${i}`, key: () => 'k', skipFailedRequests: true }),
    );
    const listeners: number[] = [];
    const app = express();
    app.get('/', ...stack, (req, res) => {
      // Node warns (MaxListenersExceededWarning) from 11 listeners of one event on.
      listeners.push(res.listenerCount('finish'), res.listenerCount('close'));
      res.status(req.query.fail ? 500 : 200).send('done');
    });
    const server = await listen(app);
    try {
      expect((await fetch(`${server.url}/?fail=1`)).status).toBe(500);
      expect(Math.max(...listeners)).toBeLessThanOrEqual(3);
      await eventually(
        async () => (await Promise.all(stack.map((l) => l.get('k')))).every((s) => s.used === 0),
        'every limiter refunded',
      );
      expect((await fetch(server.url)).status).toBe(200);
      expect((await Promise.all(stack.map((l) => l.get('k')))).map((s) => s.used)).toEqual(Array(12).fill(1));
    } finally {
      await server.close();
    }
  });

  it('decides a request made in the same turn as a refund against the quota the refund gives back', async () => {
    const outcomes: string[] = [];
    const mw = limiter({
      limit: 1,
      window: '1h',
      name: 'same-turn',
      algorithm: 'sliding-window',
      key: () => 'k',
      skipFailedRequests: true,
      handler: (_req, res) => {
        outcomes.push('denied');
        res.status(429).end();
      },
    });
    // The request decided in the refund's own turn: called straight from the response's 'finish'.
    const sameTurn = () => {
      const res = {
        headersSent: false,
        setHeader() {},
        status() {
          return res;
        },
        end() {},
        once() {},
      };
      mw({ headers: {}, ip: '10.0.0.1' } as never, res as never, () => outcomes.push('allowed'));
    };
    let fail: (() => void) | undefined;
    const app = express();
    app.get('/', mw, (req, res) => {
      if (!req.query.hold) {
        res.send('ok');
        return;
      }
      fail = () => {
        res.once('finish', sameTurn);
        res.status(500).send('failed');
      };
    });
    const server = await listen(app);
    try {
      const held = fetch(`${server.url}/?hold=1`);
      await eventually(() => fail !== undefined, 'the held request');
      // Denied from Redis, and remembered in the deny cache.
      expect((await fetch(server.url)).status).toBe(429);
      outcomes.length = 0;
      fail!();
      expect((await held).status).toBe(500);
      await eventually(() => outcomes.length === 1, 'the same-turn decision');
      expect(outcomes).toEqual(['allowed']);
    } finally {
      await server.close();
    }
  });

  it('fails open for every request of a batch even when the logger throws', async () => {
    const port = await freePort();
    // Nothing listens there, and commands fail at once instead of queueing.
    const dead = redis.track(
      new Redis({ port, host: '127.0.0.1', enableOfflineQueue: false, retryStrategy: () => 1000 }),
    );
    dead.on('error', () => {});
    const mw = rateLimit({
      redis: dead,
      limit: 10,
      window: '1m',
      key: () => 'k',
      timeout: 500,
      logger: {
        warn: () => {
          throw new Error('logger transport closed');
        },
      },
    });
    const app = express();
    app.get('/', mw, (_req, res) => {
      res.send('ok');
    });
    const server = await listen(app);
    try {
      const statuses = await Promise.all(
        [1, 2, 3].map(() => fetch(server.url, { signal: AbortSignal.timeout(2000) }).then((r) => r.status)),
      );
      expect(statuses).toEqual([200, 200, 200]);
      expect(unhandled).toEqual([]);
    } finally {
      await server.close();
    }
  });

  it('says Redis refused the call, not that it is unavailable, when a key holds the wrong type', async () => {
    const warnings: string[] = [];
    const client = redis.plain();
    const mw = rateLimit({
      redis: client,
      limit: 10,
      window: '1m',
      algorithm: 'fixed-window',
      name: 'wrong-type',
      key: () => 'k',
      logger: { warn: (message: string) => warnings.push(message) },
    });
    const app = express();
    app.get('/', mw, (_req, res) => {
      res.send('ok');
    });
    expect((await request(app).get('/')).status).toBe(200);
    const [key] = await client.keys('erk:rl:wrong-type:*');
    // The app wrote something else under the limiter's key.
    await client.del(key!);
    await client.sadd(key!, 'x');
    expect((await request(app).get('/')).status).toBe(200); // fail open
    expect(warnings).toEqual([expect.stringMatching(/Redis refused the rate-limit call \(WRONGTYPE/)]);
  });
});
