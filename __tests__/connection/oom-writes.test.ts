import express from 'express';
import request from 'supertest';
import { cacheResponse, createCache } from '../../lib/cache';
import { idempotency } from '../../lib/idempotency';
import { rateLimit } from '../../lib/rate-limit';
import { redisSession } from '../../lib/session';
import { quietLogger, sleep } from '../cache/helpers';
import { captureEvents } from '../helpers/events';
import { useRedisServer } from '../helpers/redis';

// Under OOM (noeviction) Redis refuses a script at its first write that may grow memory, and lets
// the rest of a script through once it has written. Writes that end, delete or keep what was
// already admitted must not be refused: an invalidation, ending sessions, an admitted operation's
// lease, its stored answer, forget() and release, a rate-limit refund. New data still is refused.

const redis = useRedisServer();

async function setOom(on: boolean): Promise<void> {
  const admin = redis.plain();
  await admin.config('SET', 'maxmemory-policy', 'noeviction');
  await admin.config('SET', 'maxmemory', on ? '1' : '0');
}

async function underOom<T>(run: () => Promise<T>): Promise<T> {
  await setOom(true);
  try {
    return await run();
  } finally {
    await setOom(false);
  }
}

/** A POST /pay with Idempotency-Key k, sent now (supertest sends once it is awaited or then'd). */
const pay = (app: express.Express) =>
  request(app)
    .post('/pay')
    .set('Idempotency-Key', 'k')
    .then((r) => r);

beforeEach(() => redis.plain().flushall());
afterEach(() => setOom(false));

describe('cache invalidation by key when Redis memory is full', () => {
  it('invalidate({ keys }) deletes the entry: the next GET is not the old copy', async () => {
    let version = 1;
    const mw = cacheResponse({ redis: redis.client(), ttl: '1m', l1: false, logger: quietLogger() });
    const app = express();
    app.get('/item', mw, (_req, res) => void res.send(`v${version}`));
    await request(app).get('/item');
    await sleep(100);
    expect((await request(app).get('/item')).headers['x-cache']).toBe('HIT');
    version = 2;
    await underOom(async () => {
      await mw.invalidate({ keys: ['GET /item'] });
      expect((await request(app).get('/item')).text).toBe('v2');
    });
  });

  it('invalidates(() => ({ tags, keys })) on a write route deletes both', async () => {
    let version = 1;
    const mw = cacheResponse({
      redis: redis.client(),
      ttl: '1m',
      l1: false,
      tags: () => ['item'],
      logger: quietLogger(),
    });
    const app = express();
    app.get('/item', mw, (_req, res) => void res.send(`v${version}`));
    app.put(
      '/item',
      mw.invalidates(() => ({ tags: ['item'], keys: ['GET /item'] })),
      (_req, res) => {
        version++;
        res.send('saved');
      },
    );
    await request(app).get('/item');
    await sleep(100);
    expect((await request(app).get('/item')).headers['x-cache']).toBe('HIT');
    await underOom(async () => {
      expect((await request(app).put('/item')).status).toBe(200);
      expect((await request(app).get('/item')).text).toBe('v2');
    });
  });

  it('cache.invalidate({ keys }) deletes a wrap() value', async () => {
    const cache = createCache({ redis: redis.client(), l1: false, logger: quietLogger() });
    try {
      let version = 1;
      const read = () => cache.wrap('report', async () => `v${version}`, { ttl: '1m' });
      expect(await read()).toBe('v1');
      version = 2;
      await underOom(async () => {
        await cache.invalidate({ keys: ['report'] });
        expect(await read()).toBe('v2');
      });
    } finally {
      await cache.close();
    }
  });
});

describe('redisSession logoutAll when Redis memory is full', () => {
  it('ends the live sessions and says so, also when the index still lists one that expired', async () => {
    const sessions = redisSession({
      redis: redis.client(),
      secret: 'x'.repeat(32),
      cookie: { secure: false },
      ttl: 1000,
    });
    const app = express();
    app.use(sessions);
    app.post('/login', async (req, res) => {
      await sessions.login(req, { userId: 'u' });
      res.json({ ok: true });
    });
    app.get('/me', (req, res) => void res.json({ u: req.session.userId ?? null }));
    app.post('/logout-everywhere', async (req, res) => {
      res.json({ ended: await sessions.logoutAll(req.session.userId!) });
    });
    app.use(sessions.handleErrors);
    const cookieOf = (res: request.Response) =>
      (res.headers['set-cookie'] as unknown as string[])[0]!.split(';')[0]!;
    // One device logs in and goes idle: its session expires after 1 s, its index entry stays (2 × ttl).
    await request(app).post('/login').expect(200);
    const kept = cookieOf(await request(app).post('/login').expect(200));
    for (let i = 0; i < 3; i++) {
      await sleep(400);
      expect((await request(app).get('/me').set('Cookie', kept)).body).toEqual({ u: 'u' });
    }
    const answer = await underOom(() => request(app).post('/logout-everywhere').set('Cookie', kept));
    const after = (await request(app).get('/me').set('Cookie', kept)).body;
    expect({ status: answer.status, body: answer.body, after }).toEqual({
      status: 200,
      body: { ended: 1 },
      after: { u: null },
    });
  });
});

describe('idempotency when Redis memory fills while the handler runs', () => {
  it('keeps the lease of a handler slower than lockTtl: a retry gets 409, not a second run', async () => {
    let runs = 0;
    const app = express();
    app.post('/pay', idempotency({ redis: redis.client(), lockTtl: 300 }), async (_req, res) => {
      runs++;
      await sleep(1200);
      res.status(201).json({ run: runs });
    });
    const first = pay(app);
    await sleep(50);
    await setOom(true);
    await sleep(600); // longer than lockTtl: every renewal falls in the full spell
    await setOom(false);
    const retry = await pay(app);
    expect((await first).status).toBe(201);
    expect({ retry: retry.status, runs }).toEqual({ retry: 409, runs: 1 });
  });

  it('stores the answer: the retry replays it (Idempotent-Replayed: true), no store-failed', async () => {
    const events = captureEvents('idempotency');
    try {
      let runs = 0;
      let hold: () => void = () => {};
      const app = express();
      app.post('/pay', idempotency({ redis: redis.client(), lockTtl: 300 }), async (_req, res) => {
        runs++;
        if (runs === 1) await new Promise<void>((resolve) => (hold = resolve));
        res.status(201).json({ run: runs });
      });
      const first = pay(app);
      await sleep(50);
      await setOom(true);
      hold();
      expect((await first).status).toBe(201);
      await setOom(false);
      await sleep(400);
      const retry = await pay(app);
      expect({
        storeFailed: events.count('store-failed'),
        retry: retry.status,
        replayed: retry.headers['idempotent-replayed'],
        runs,
      }).toEqual({ storeFailed: 0, retry: 201, replayed: 'true', runs: 1 });
    } finally {
      events.stop();
    }
  });
});

describe('rateLimit refund of a request counted before Redis memory filled', () => {
  it.each(['fixed-window', 'sliding-window', 'token-bucket', 'gcra'] as const)(
    'skipFailedRequests gives the failed request back under OOM (%s)',
    async (algorithm) => {
      const events = captureEvents('rate-limit');
      try {
        const app = express();
        app.get(
          '/',
          rateLimit({
            redis: redis.client(),
            limit: 1,
            window: '1h',
            algorithm,
            name: `oom-${algorithm}`,
            key: () => 'c',
            skipFailedRequests: true,
          }),
          async (_req, res) => {
            await sleep(150);
            res.status(500).send('failed');
          },
        );
        const first = request(app)
          .get('/')
          .then((r) => r);
        await sleep(60); // counted before memory filled
        await setOom(true);
        expect((await first).status).toBe(500);
        await sleep(100); // the refund goes out while memory is full
        await setOom(false);
        const next = await request(app).get('/');
        expect({
          refund: events.count('refund'),
          refundFailed: events.count('refund-failed'),
          next: next.status,
        }).toEqual({ refund: 1, refundFailed: 0, next: 500 });
      } finally {
        events.stop();
      }
    },
  );
});

describe('idempotency forget() and release when Redis memory is full', () => {
  function payApp(lockTtl = '30s') {
    const holds: Array<(status: number) => void> = [];
    let runs = 0;
    const mw = idempotency({ redis: redis.client(), lockTtl, scope: () => 'me' });
    const app = express();
    app.post('/pay', mw, async (_req, res) => {
      runs++;
      const status = await new Promise<number>((resolve) => holds.push(resolve));
      res.status(status).json({ run: runs });
    });
    return {
      mw,
      app,
      runs: () => runs,
      answer: (i: number, status: number) => holds[i]!(status),
    };
  }

  it('forget() of a record in flight goes through under OOM', async () => {
    const { mw, app, answer, runs } = payApp();
    const first = pay(app);
    await sleep(50);
    await setOom(true);
    let forgot: unknown;
    try {
      forgot = await mw.forget({ key: 'k', route: '/pay', scope: 'me' });
    } catch (error) {
      forgot = (error as Error).message;
    }
    await setOom(false);
    answer(0, 201);
    await first;
    await sleep(50);
    // forget() was called to discard the first run's answer: the retry must run afresh.
    const pending = pay(app);
    await sleep(100);
    if (runs() === 2) answer(1, 201);
    const retry = await pending;
    expect({ forgot, replayed: retry.headers['idempotent-replayed'] ?? null, runs: runs() }).toEqual({
      forgot: true,
      replayed: null,
      runs: 2,
    });
  });

  it('a reservation made over a forgotten record is released under OOM (the retry runs, no 409)', async () => {
    const events = captureEvents('idempotency');
    try {
      const { mw, app, answer, runs } = payApp();
      const first = pay(app);
      await sleep(50);
      expect(await mw.forget({ key: 'k', route: '/pay', scope: 'me' })).toBe(true);
      const second = pay(app);
      await sleep(50);
      expect(runs()).toBe(2);
      await setOom(true);
      answer(1, 500); // not stored: the reservation is released so the client may retry at once
      expect((await second).status).toBe(500);
      await sleep(50);
      await setOom(false);
      const third = pay(app);
      await sleep(100);
      if (runs() === 3) answer(2, 201);
      const r3 = await third;
      expect({
        releaseFailed: events.count('release-failed'),
        third: r3.status,
      }).toEqual({ releaseFailed: 0, third: 201 });
      answer(0, 201);
      await first;
    } finally {
      events.stop();
    }
  });
});

describe('cache fill when Redis memory fills during it: new data is refused', () => {
  /**
   * A route whose answer varies on Accept-Language (or not), slow for `fr`: a `fr` fill takes its
   * lock, memory fills, then it stores. Returns what the next `fr` request gets and the entry keys.
   */
  async function fillAsMemoryFills(vary: boolean) {
    const mw = cacheResponse({
      redis: redis.client(),
      ttl: '1m',
      l1: false,
      jitter: 0,
      logger: quietLogger(),
    });
    const app = express();
    app.get('/p', mw, async (req, res) => {
      const lang = req.get('accept-language') ?? '';
      if (lang === 'fr') await sleep(300);
      if (vary) res.vary('Accept-Language');
      res.send(`hello-${lang}-${'x'.repeat(100_000)}`);
    });
    if (vary) {
      // The Vary marker exists already: only the new variant's own write is new data.
      await request(app).get('/p').set('Accept-Language', 'en');
      await sleep(100);
      expect((await request(app).get('/p').set('Accept-Language', 'en')).headers['x-cache']).toBe('HIT');
      await redis.plain().del((await redis.plain().keys('erk:c:*:v:*'))[0]!);
    }
    const fill = request(app)
      .get('/p')
      .set('Accept-Language', 'fr')
      .then((r) => r);
    await sleep(100); // it holds the lock now
    await setOom(true);
    await fill;
    await sleep(100);
    const after = await request(app).get('/p').set('Accept-Language', 'fr');
    const keys = await redis.plain().keys('erk:c:*');
    await setOom(false);
    return { hit: after.headers['x-cache'] === 'HIT', keys };
  }

  it('a plain entry is not stored', async () => {
    const { hit, keys } = await fillAsMemoryFills(false);
    expect({ hit, entries: keys.filter((k) => !k.endsWith(':lock')) }).toEqual({ hit: false, entries: [] });
  });

  it('a new Vary variant is not stored either', async () => {
    const { hit, keys } = await fillAsMemoryFills(true);
    expect({ hit, variants: keys.filter((k) => k.includes(':v:')) }).toEqual({ hit: false, variants: [] });
  });
});
