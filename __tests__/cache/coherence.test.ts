import express from 'express';
import { type CacheResponseOptions, cacheResponse, createCache } from '../../lib/cache';
import { captureEvents } from '../helpers/events';
import { eventually, useRedisServer } from '../helpers/redis';
import { entryKeys, listen, quietLogger, sleep } from './helpers';

// An invalidation must reach whatever the cache holds or is about to hold: the entry in Redis, every
// instance's L1, and the answers of fills that were already running. Each test here is a race found
// by a review, reproduced over HTTP against a real redis-server.

const redis = useRedisServer();
const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((close) => close()));
});

async function serve(app: express.Express): Promise<string> {
  const server = await listen(app);
  closers.push(server.close);
  return server.url;
}

/** The routes answer objects or, /search, an array. */
type Body = { version?: number; price?: number; runs?: number; length?: number };

const read = async (url: string) => {
  const res = await fetch(url);
  return { xcache: res.headers.get('x-cache'), body: (await res.json()) as Body };
};

beforeEach(() => redis.plain().flushall());

/**
 * GET /p/1 behind `cacheResponse` (tagged `product:1`): the origin reads `db.price`, then takes
 * `delayMs` to answer, the window in which a write and its invalidation can overtake it.
 */
function productApp(options: Partial<CacheResponseOptions>, delayMs: number) {
  const db = { price: 1 };
  const mw = cacheResponse({
    redis: redis.client(),
    ttl: '1m',
    logger: quietLogger(),
    tags: () => ['product:1'],
    ...options,
  });
  const app = express();
  app.get('/p/1', mw, async (_req, res) => {
    const row = { price: db.price };
    await sleep(delayMs);
    res.json(row);
  });
  return { db, mw, app };
}

describe('cacheResponse: invalidation against fills in flight', () => {
  it('an entry whose store landed after its call timed out (Redis paused) is still reached by invalidate({ tags })', async () => {
    const { db, mw, app } = productApp({ jitter: 0, l1: false, timeout: 150 }, 200);
    const url = `${await serve(app)}/p/1`;
    const admin = redis.plain();
    const first = fetch(url);
    await sleep(120);
    await admin.call('CLIENT', 'PAUSE', '800', 'ALL');
    expect((await first).status).toBe(200);
    await sleep(1000);
    // Whatever landed once Redis resumed, an entry in Redis is one its tag reaches.
    for (const key of await entryKeys(admin)) expect(await admin.sismember('erk:t:{product:1}', key)).toBe(1);
    db.price = 2;
    await mw.invalidate({ tags: ['product:1'] });
    expect(await read(url)).toEqual({ xcache: 'MISS', body: { price: 2 } });
  });

  it('a request sent after a write answered does not get the answer of a fill that started before it', async () => {
    const { db, mw, app } = productApp({}, 400);
    app.put(
      '/p/1',
      mw.invalidates(() => ['product:1']),
      (_req, res) => {
        db.price = 2;
        res.json({ ok: true });
      },
    );
    const url = `${await serve(app)}/p/1`;
    await mw.cache.ready();
    const early = read(url); // someone else's read, started before the write
    await sleep(100);
    expect((await fetch(url, { method: 'PUT' })).status).toBe(200);
    expect((await read(url)).body).toEqual({ price: 2 }); // my read, after my write
    expect((await early).body).toEqual({ price: 1 });
    await sleep(50);
    expect((await read(url)).body).toEqual({ price: 2 });
  });

  it('the same holds when the invalidation came from another instance this one does not hear (l1: false)', async () => {
    const { db, app } = productApp({ l1: false }, 400);
    const job = createCache({ redis: redis.client(), l1: false, logger: quietLogger() });
    const url = `${await serve(app)}/p/1`;
    const early = read(url);
    await sleep(100);
    const mine = (async () => {
      await sleep(100);
      return read(url); // joins the fill in flight, but only after the job's invalidation
    })();
    db.price = 2;
    await job.invalidate({ tags: ['product:1'] });
    expect((await mine).body).toEqual({ price: 2 });
    expect((await early).body).toEqual({ price: 1 });
    await job.close();
  });

  it('cache.wrap: a call made after invalidate() resolved does not get a value read before it', async () => {
    const cache = createCache({ redis: redis.client(), logger: quietLogger() });
    let value = 1;
    const load = async () => {
      const seen = value;
      await sleep(400);
      return seen;
    };
    const early = cache.wrap('k', load, { ttl: '1m' });
    await sleep(100);
    value = 2;
    await cache.invalidate({ keys: ['k'] });
    expect(await cache.wrap('k', load, { ttl: '1m' })).toBe(2);
    expect(await early).toBe(1);
    await cache.close();
  });

  it('a job invalidating through createCache({ l1: false }) clears the web instances’ L1', async () => {
    let version = 1;
    const mw = cacheResponse({
      redis: redis.client(),
      ttl: '1m',
      logger: quietLogger(),
      tags: () => ['product:1'],
    });
    const app = express();
    app.get('/p/1', mw, (_req, res) => {
      res.json({ version });
    });
    const url = `${await serve(app)}/p/1`;
    await mw.cache.ready();
    await read(url);
    await eventually(async () => (await read(url)).xcache === 'HIT', 'an L1 hit');
    const job = createCache({ redis: redis.client(), l1: false, logger: quietLogger() });
    version = 2;
    await job.invalidate({ tags: ['product:1'] });
    await eventually(async () => (await read(url)).body.version === 2, 'the new version', 2000);
    await job.close();
  });

  it('an instance whose app disconnected its client and connected it again still drops its L1 on another’s invalidation', async () => {
    let version = 1;
    const client = redis.client();
    const mw = cacheResponse({ redis: client, ttl: '1m', logger: quietLogger(), tags: () => ['product:1'] });
    const app = express();
    app.get('/p/1', mw, (_req, res) => {
      res.json({ version });
    });
    const url = `${await serve(app)}/p/1`;
    await mw.cache.ready();
    const ended = new Promise((resolve) => client.once('end', resolve));
    client.disconnect();
    await ended;
    await client.connect();
    await read(url);
    await eventually(async () => (await read(url)).xcache === 'HIT', 'an L1 hit');
    const job = createCache({ redis: redis.client(), l1: false, logger: quietLogger() });
    version = 2;
    await job.invalidate({ tags: ['product:1'] });
    await eventually(async () => (await read(url)).body.version === 2, 'the new version', 2000);
    await job.close();
  });

  it('an invalidation while a stale-while-revalidate refresh runs is not lost when the refresh brings a new tag', async () => {
    const db: Record<string, number> = { p1: 1 };
    const listed = ['p1'];
    const events = captureEvents('cache');
    const mw = cacheResponse({
      redis: redis.client(),
      ttl: 300,
      staleWhileRevalidate: '10s',
      jitter: 0,
      l1: false,
      logger: quietLogger(),
      tags: (_req, res) => (res.locals.ids as string[]).map((id) => `product:${id}`),
    });
    const app = express();
    app.get('/search', mw, async (_req, res) => {
      const rows = listed.map((id) => ({ id, price: db[id] }));
      res.locals.ids = [...listed];
      await sleep(300);
      res.json(rows);
    });
    const url = `${await serve(app)}/search`;
    try {
      await read(url);
      await events.waitFor('store', 1);
      await sleep(400);
      db.p7 = 10;
      listed.push('p7');
      expect((await read(url)).xcache).toBe('STALE'); // starts the refresh, which reads p7 at 10
      await sleep(100);
      db.p7 = 20;
      await mw.invalidate({ tags: ['product:p7'] });
      await events.waitFor('store-dropped', 1);
      // The stale copy (without p7) is served while another refresh runs; p7 never shows at 10.
      const seen: unknown[] = [];
      await eventually(async () => {
        const { body } = await read(url);
        seen.push(body);
        return body.length === 2;
      }, 'a refresh that lists p7');
      expect(seen.at(-1)).toEqual([
        { id: 'p1', price: 1 },
        { id: 'p7', price: 20 },
      ]);
    } finally {
      events.stop();
    }
  });

  it('a background refresh whose route never answers lets go of the fill lock', async () => {
    let runs = 0;
    const logger = quietLogger();
    const mw = cacheResponse({
      redis: redis.client(),
      ttl: 300,
      staleWhileRevalidate: 1000,
      lockTimeout: 200,
      jitter: 0,
      l1: false,
      logger,
    });
    const app = express();
    app.get('/a', mw, (_req, res) => {
      runs += 1;
      if (runs === 2) return; // the refresh hangs (a query that never returns)
      res.json({ runs });
    });
    const url = `${await serve(app)}/a`;
    const admin = redis.plain();
    await read(url);
    await sleep(400);
    expect((await read(url)).xcache).toBe('STALE');
    await eventually(async () => runs === 2, 'the refresh');
    // Past 3 × lockTimeout the refresh is given up and its lock released.
    await eventually(async () => (await admin.keys('erk:c:*:lock')).length === 0, 'the lock released', 2000);
    expect(logger.warnings.map((w) => w.message)).toContain('background refresh failed; stale entry kept');
    await sleep(1000); // past ttl + staleWhileRevalidate: a plain miss, with no lock to wait for
    const started = Date.now();
    expect((await read(url)).body).toEqual({ runs: 3 });
    expect(Date.now() - started).toBeLessThan(400);
  });
});

describe('cacheResponse: odd Vary names', () => {
  it.each(['constructor', '__proto__'])(
    'a response that varies on "%s" is cached per value and leaves other routes alone',
    async (name) => {
      const mw = cacheResponse({ redis: redis.client(), ttl: '1m', logger: quietLogger() });
      const app = express();
      let runs = 0;
      app.get('/odd', mw, (_req, res) => {
        runs += 1;
        res.set('Vary', name).json({ runs });
      });
      app.get('/other', mw, (_req, res) => {
        res.json({ other: true });
      });
      const url = await serve(app);
      expect((await fetch(`${url}/odd`)).status).toBe(200);
      await eventually(async () => (await read(`${url}/odd`)).xcache === 'HIT', 'a hit on /odd');
      expect(runs).toBe(1);
      await read(`${url}/other`);
      await eventually(async () => (await read(`${url}/other`)).xcache === 'HIT', 'a hit on /other');
    },
  );
});
