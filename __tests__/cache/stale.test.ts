import compression from 'compression';
import express from 'express';
import helmet from 'helmet';
import request from 'supertest';
import { CACHE_REFRESH, type CacheResponseOptions, cacheResponse, createCache } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { rateLimit } from '../../lib/rate-limit';
import { captureEvents } from '../helpers/events';
import { eventually, useFlushedClient, useRedisServer } from '../helpers/redis';
import { expectRefreshUncharged, quietLogger, sleep, staleAfter300ms, waitForKeys } from './helpers';

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

/** A cacheResponse whose entries go stale after 100 ms and answer a failing route for a minute. */
const staleAfter100ms = (extra: Partial<CacheResponseOptions> = {}) =>
  cacheResponse({ redis: client, ttl: 100, jitter: 0, staleIfError: '1m', ...extra });

describe('stale-while-revalidate', () => {
  it('with L1 on two instances, the second takes the entry the first refreshed instead of running the origin again', async () => {
    let calls = 0;
    const instance = () => {
      const mw = cacheResponse({
        redis: client,
        ttl: 1000,
        jitter: 0,
        staleWhileRevalidate: '1m',
        l1: { max: 10 },
        logger: quietLogger(),
      });
      const app = express();
      app.get('/r', mw, (_req, res) => {
        calls += 1;
        res.send(`v${calls}`);
      });
      return { app, mw };
    };
    const a = instance();
    const b = instance();
    await a.mw.cache.ready();
    await b.mw.cache.ready();
    const events = captureEvents('cache');
    try {
      expect((await request(a.app).get('/r')).text).toBe('v1');
      await events.waitFor('store', 1);
      expect((await request(b.app).get('/r')).text).toBe('v1'); // into B's L1 from Redis
      await sleep(1100); // both L1 copies are stale now
      expect((await request(a.app).get('/r')).headers['x-cache']).toBe('STALE');
      await events.waitFor('store', 2); // A refreshed Redis
      const fromB = await request(b.app).get('/r');
      expect(fromB.headers['x-cache']).toBe('STALE');
      await events.waitFor('refresh-from-redis', 1);
      const again = await request(b.app).get('/r');
      expect(again.headers['x-cache']).toBe('HIT');
      expect(again.text).toBe('v2');
      expect(calls).toBe(2);
    } finally {
      events.stop();
    }
  });

  it.each([false, { max: 10 }] as const)(
    'serves STALE at once after ttl and refreshes in the background exactly once (l1: %p)',
    async (l1) => {
      let version = 1;
      let calls = 0;
      const app = express();
      const mw = cacheResponse({
        redis: client,
        ttl: 1000,
        jitter: 0,
        staleWhileRevalidate: '1m',
        l1,
        logger: quietLogger(),
      });
      app.get('/r', mw, async (_req, res) => {
        calls++;
        // The refresh is slow, so every concurrent request below arrives while it runs.
        await sleep(version === 1 ? 10 : 800);
        res.send(`v${version}`);
      });
      const events = captureEvents('cache');
      try {
        expect((await request(app).get('/r')).text).toBe('v1');
        await events.waitFor('store', 1);
        version = 2;
        await sleep(1100);
        const stale = await Promise.all(Array.from({ length: 10 }, () => request(app).get('/r')));
        for (const res of stale) {
          expect(res.headers['x-cache']).toBe('STALE');
          expect(res.text).toBe('v1');
        }
        // Waiting on the store event rather than polling over HTTP: a poll landing after the refreshed
        // entry's own ttl would see it stale and (rightly) start another refresh.
        await events.waitFor('store', 2);
        expect(calls).toBe(2);
        const fresh = await request(app).get('/r');
        expect(fresh.headers['x-cache']).toBe('HIT');
        expect(fresh.text).toBe('v2');
        expect(calls).toBe(2);
      } finally {
        events.stop();
      }
    },
  );
});

describe('stale-if-error', () => {
  it('serves the stale entry when the origin answers 5xx or throws, within staleIfError', async () => {
    let mode: 'ok' | '503' | 'throw' = 'ok';
    const app = express();
    const mw = staleAfter100ms({ l1: false });
    app.get('/r', mw, (_req, res) => {
      if (mode === 'throw') throw new Error('origin down');
      if (mode === '503') return void res.status(503).set('X-Origin', 'failed').send('sorry');
      res.set('X-Origin', 'ok').send('good');
    });
    app.use((_err: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      // As Express's own final handler does: the stale 200 must not go out as "200 Internal Server Error".
      res.statusMessage = 'Internal Server Error';
      res.status(500).send('error page');
    });
    await request(app).get('/r');
    await waitForKeys(client, 'erk:c:*');
    await sleep(200);
    for (const failure of ['503', 'throw'] as const) {
      mode = failure;
      const res = await request(app).get('/r');
      expect(res.status).toBe(200);
      expect(res.text).toBe('good');
      expect(res.headers['x-cache']).toBe('STALE');
      expect(res.headers['x-origin']).toBe('ok');
      expect((res as unknown as { res: { statusMessage: string } }).res.statusMessage).toBe('OK');
    }
    mode = 'ok';
    expect((await request(app).get('/r')).headers['x-cache']).toBe('MISS');
  });

  it("keeps the headers front middleware set, as the error path never sent them (helmet's CSP, not the error page's default-src 'none')", async () => {
    let fail = false;
    const app = express();
    app.use(helmet());
    app.use((_req, res, next) => {
      res.setHeader('Content-Language', 'en');
      next();
    });
    app.get(
      '/page',
      cacheResponse({
        redis: client,
        ttl: 100,
        jitter: 0,
        staleIfError: '1m',
        l1: false,
        logger: quietLogger(),
      }),
      (_req, res) => {
        if (fail) throw new Error('database down');
        res.type('html').send('<!doctype html><script src="/app.js"></script>');
      },
    );
    const miss = await request(app).get('/page');
    const csp = miss.headers['content-security-policy'];
    expect(csp).toContain("script-src 'self'");
    await waitForKeys(client, 'erk:c:*');
    await sleep(200);
    fail = true;
    // No error handler of the app's: Express's own rewrites the CSP and drops Content-Language.
    const stale = await request(app).get('/page');
    expect([stale.status, stale.headers['x-cache']]).toEqual([200, 'STALE']);
    expect(stale.text).toContain('<script src="/app.js">');
    expect(stale.headers['content-security-policy']).toBe(csp);
    expect(stale.headers['content-language']).toBe('en');
  });

  it('answers a HEAD from the stale entry when the origin fails, as a GET, and the route when it does not', async () => {
    let mode: 'ok' | '503' | 'throw' = 'ok';
    const app = express();
    app.get('/r', staleAfter100ms({ l1: false }), (_req, res) => {
      if (mode === 'throw') throw new Error('origin down');
      if (mode === '503') return void res.status(503).send('sorry');
      res.set('X-Origin', 'ok').send('good');
    });
    await request(app).get('/r');
    await waitForKeys(client, 'erk:c:*');
    await sleep(200);
    for (const failure of ['503', 'throw'] as const) {
      mode = failure;
      const head = await request(app).head('/r');
      expect([head.status, head.headers['x-cache'], head.headers['content-length']]).toEqual([
        200,
        'STALE',
        '4',
      ]);
      expect(head.headers['x-origin']).toBe('ok');
    }
    mode = 'ok';
    const fine = await request(app).head('/r');
    expect([fine.status, fine.headers['x-cache'], fine.headers['content-length']]).toEqual([
      200,
      'MISS',
      '4',
    ]);
    expect(fine.headers.etag).toMatch(/^W\//); // the route's own, untouched
  });

  it('serves the stale entry to every concurrent request while the origin fails, calling it once', async () => {
    let healthy = true;
    let calls = 0;
    const app = express();
    const mw = cacheResponse({
      redis: client,
      ttl: 100,
      jitter: 0,
      staleIfError: '1m',
      logger: quietLogger(),
    });
    let entered = 0;
    app.get(
      '/r',
      (_req, _res, next) => {
        entered++;
        next();
      },
      mw,
      async (_req, res) => {
        calls++;
        // While failing, answer only once all four concurrent requests are in, so they coalesce
        // behind this one however slowly the test machine starts them.
        if (!healthy) await eventually(() => entered >= 4, 'all four requests to arrive');
        await sleep(50);
        if (healthy) res.send('good');
        else res.status(503).send('origin down');
      },
    );
    const events = captureEvents('cache');
    try {
      await request(app).get('/r');
      await events.waitFor('store', 1);
      await sleep(200);
      healthy = false;
      calls = 0;
      entered = 0;
      const all = await Promise.all(Array.from({ length: 4 }, () => request(app).get('/r')));
      for (const res of all) {
        expect([res.status, res.headers['x-cache'], res.text]).toEqual([200, 'STALE', 'good']);
      }
      expect(calls).toBe(1);
    } finally {
      events.stop();
    }
  });

  it.each([false, true])(
    'does not answer with a stale entry invalidated while the failing route ran (l1: %s)',
    async (l1) => {
      const route = gate<void>();
      let phase: 'first' | 'failing' = 'first';
      let started = false;
      const app = express();
      const mw = staleAfter100ms({ lockTimeout: '1s', ...(l1 ? {} : { l1: false }) });
      app.get('/r', mw, async (_req, res) => {
        if (phase === 'first') return void res.send('invalidated body');
        started = true;
        await route.p;
        res.status(503).send('origin down');
      });
      await request(app).get('/r');
      await waitForKeys(client, 'erk:c:*');
      await sleep(150);
      phase = 'failing';
      const pending = request(app)
        .get('/r')
        .then((r) => r);
      await eventually(() => started, 'the fill to run the route');
      await mw.invalidate({ keys: ['GET /r'] });
      route.open();
      const res = await pending;
      expect([res.status, res.text, res.headers['x-cache']]).toEqual([503, 'origin down', 'MISS']);
    },
  );

  it('passes the error through when there is no stale entry', async () => {
    const app = express();
    app.get('/r', cacheResponse({ redis: client, ttl: 100, staleIfError: '1m', l1: false }), (_req, res) => {
      res.status(502).send('bad gateway');
    });
    const res = await request(app).get('/r');
    expect(res.status).toBe(502);
    expect(res.text).toBe('bad gateway');
  });
});

describe('compression', () => {
  const body = JSON.stringify({
    items: Array.from({ length: 200 }, (_, i) => ({ id: i, name: `item ${i}` })),
  });
  const get = (app: express.Express, encoding: string) =>
    request(app)
      .get('/r')
      .set('Accept-Encoding', encoding)
      .buffer(true)
      .parse((res, cb) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => cb(null, Buffer.concat(chunks)));
      });
  // superagent gunzips on the way in (and fails on a body that is not really gzip).
  const text = (res: request.Response) => (res.body as Buffer).toString();

  it.each(['before', 'after'])('works with compression() mounted %s it', async (where) => {
    let calls = 0;
    const app = express();
    const mw = cacheResponse({ redis: client, ttl: '1m', l1: { max: 10 } });
    if (where === 'before') app.use(compression({ threshold: 0 }));
    else app.use(mw);
    if (where === 'before') app.use(mw);
    else app.use(compression({ threshold: 0 }));
    app.get('/r', (_req, res) => {
      calls++;
      res.type('application/json').send(body);
    });
    for (let round = 0; round < 2; round++) {
      const gz = await get(app, 'gzip');
      expect(gz.headers['content-encoding']).toBe('gzip');
      expect(text(gz)).toBe(body);
      const plain = await get(app, 'identity');
      expect(plain.headers['content-encoding']).toBeUndefined();
      expect(text(plain)).toBe(body);
      if (round === 1) {
        expect(gz.headers['x-cache']).toBe('HIT');
        expect(plain.headers['x-cache']).toBe('HIT');
      }
      await sleep(50);
    }
    // Before: one stored identity body, compressed per request. After: one entry per encoding.
    expect(calls).toBe(where === 'before' ? 1 : 2);
  });
});

describe('stale-while-revalidate for HEAD', () => {
  it.each([false, { max: 10 }] as const)(
    'a HEAD that finds the entry stale serves it and starts the one refresh, as a GET does (l1: %p)',
    async (l1) => {
      let calls = 0;
      const app = express();
      app.get('/r', staleAfter300ms(client, l1), (_req, res) => {
        calls += 1;
        res.send(`v${calls}`);
      });
      const events = captureEvents('cache');
      try {
        await request(app).get('/r');
        await events.waitFor('store', 1);
        await sleep(400);
        for (let i = 0; i < 3; i++) {
          const head = await request(app).head('/r');
          expect(head.headers['x-cache']).toMatch(i === 0 ? /^STALE$/ : /^(STALE|HIT)$/);
          expect(head.headers['content-length']).toBe('2');
        }
        await events.waitFor('store', 2);
        expect(calls).toBe(2);
        expect((await request(app).get('/r')).text).toBe('v2');
      } finally {
        events.stop();
      }
    },
  );
});

describe('stale-while-revalidate of a varying, tagged entry', () => {
  it('the refresh registers only keys it wrote with the tags', async () => {
    const app = express();
    app.get(
      '/r',
      cacheResponse({
        redis: client,
        ttl: 300,
        jitter: 0,
        staleWhileRevalidate: '1m',
        l1: false,
        tags: () => ['t'],
        logger: quietLogger(),
      }),
      (req, res) => {
        res.vary('X-Lang').send(`in ${req.headers['x-lang']}`);
      },
    );
    const events = captureEvents('cache');
    try {
      await request(app).get('/r').set('X-Lang', 'en');
      await events.waitFor('store', 1);
      await sleep(400);
      expect((await request(app).get('/r').set('X-Lang', 'en')).headers['x-cache']).toBe('STALE');
      await events.waitFor('store', 2);
      await sleep(100);
    } finally {
      events.stop();
    }
    const members = await client.smembers('erk:t:{t}');
    for (const member of members) expect([member, await client.exists(member)]).toEqual([member, 1]);
  });
});

describe('stale-while-revalidate behind rateLimit', () => {
  it('lets the refresh lock go at once when a middleware in front answers the refresh, so the next stale read refreshes', async () => {
    let version = 1;
    let answerRefreshInFront = false;
    let refreshesAnsweredInFront = 0;
    const app = express();
    app.use((req, res, next) => {
      // A maintenance switch (or auth, a redirect) that answers the background refresh itself.
      if (answerRefreshInFront && (req as unknown as Record<symbol, unknown>)[CACHE_REFRESH]) {
        refreshesAnsweredInFront += 1;
        res.status(503).end();
        return;
      }
      next();
    });
    app.get(
      '/front',
      cacheResponse({
        redis: client,
        ttl: 300,
        jitter: 0,
        staleWhileRevalidate: '1m',
        lockTimeout: '5s',
        l1: false,
        logger: quietLogger(),
      }),
      (_req, res) => {
        res.send(`v${version}`);
      },
    );
    expect((await request(app).get('/front')).text).toBe('v1');
    await sleep(400);
    version = 2;
    answerRefreshInFront = true;
    const stale = await request(app).get('/front');
    expect([stale.headers['x-cache'], stale.text]).toEqual(['STALE', 'v1']);
    await eventually(async () => refreshesAnsweredInFront === 1, 'the refresh answered in front');
    await sleep(50);
    answerRefreshInFront = false;
    // Well within lockTimeout: the lock of the refresh that never reached the cache is gone.
    expect((await request(app).get('/front')).headers['x-cache']).toBe('STALE');
    await eventually(
      async () => (await request(app).get('/front')).text === 'v2',
      'the next refresh to store v2',
      2000,
    );
  });

  it("does not charge the client for the cache's background refresh", async () => {
    const limiter = rateLimit({ redis: client, limit: 3, window: '1m', key: () => 'client', headers: false });
    await expectRefreshUncharged(limiter, staleAfter300ms(client));
  });
});

/** A promise and the function that resolves it. */
function gate<T>() {
  let open!: (v: T) => void;
  const p = new Promise<T>((r) => (open = r));
  return { p, open };
}

describe('stale-if-error and an invalidation racing the lookup', () => {
  it.each([false, true])(
    'does not answer with a stale entry invalidated while the lookup was in flight (l1: %s)',
    async (l1) => {
      let phase: 'first' | 'failing' = 'first';
      const app = express();
      const mw = staleAfter100ms({ lockTimeout: '1s', logger: quietLogger(), ...(l1 ? {} : { l1: false }) });
      app.get('/r', mw, (_req, res) => {
        if (phase === 'first') return void res.send('invalidated body');
        res.status(503).send('origin down');
      });
      await request(app).get('/r');
      await waitForKeys(client, 'erk:c:*');
      await sleep(150);
      phase = 'failing';
      invalidateDuringLookup(mw.cache, () => mw.invalidate({ keys: ['GET /r'] }));
      const res = await request(app).get('/r');
      expect([res.status, res.text]).toEqual([503, 'origin down']);
    },
  );

  it.each([
    ['', false],
    [' by another instance (without L1, never heard of here)', true],
  ])(
    'cache.wrap: does not answer with an entry invalidated%s while the lookup was in flight',
    async (_by, elsewhere) => {
      const cache = createCache({ redis: client, l1: false, lockTimeout: '1s', logger: quietLogger() });
      const other = elsewhere ? createCache({ redis: client, l1: false, logger: quietLogger() }) : cache;
      await cache.wrap('k', () => 'invalidated value', { ttl: 100, staleIfError: '1m' });
      await sleep(150);
      invalidateDuringLookup(cache, () => other.invalidate({ keys: ['k'] }));
      await expect(
        cache.wrap(
          'k',
          () => {
            throw new Error('origin down');
          },
          { ttl: 100, staleIfError: '1m' },
        ),
      ).rejects.toThrow('origin down');
    },
  );
});

/** Runs `before` just before the lookup's lock attempt on a stale entry (the lookup is in flight). */
function invalidateDuringLookup(cache: object, before: () => Promise<void>) {
  const c = cache as { tryLockAt: (k: string, t: string, ...rest: unknown[]) => Promise<unknown> };
  const orig = c.tryLockAt;
  let once = true;
  c.tryLockAt = async function (this: unknown, k: string, t: string, ...rest: unknown[]) {
    if (once) {
      once = false;
      await before();
    }
    return orig.call(this, k, t, ...rest);
  };
}
