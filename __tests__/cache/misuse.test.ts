import { randomBytes } from 'node:crypto';
import express from 'express';
import helmet from 'helmet';
import request from 'supertest';
import { cacheResponse, createCache } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { captureEvents } from '../helpers/events';
import { useFlushedClient, useRedisServer } from '../helpers/redis';
import { quietLogger, sleep, untilHit, watchCommands } from './helpers';

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

describe('cacheResponse: arguments of the wrong shape fail loudly instead of doing nothing', () => {
  it.each([
    ['a bare string', 'product:42'],
    ['"tag" for "tags"', { tag: ['product:42'] }],
    ['"key" for "keys"', { key: ['GET /r'] }],
    ['nothing', undefined],
    ['an array', ['product:42']],
    ['tags that are not strings', { tags: [42] }],
    ['{} (read as "clear everything" by apicache users)', {}],
    ['tags and keys both undefined', { tags: undefined, keys: undefined }],
  ])('invalidate() with %s rejects with a TypeError showing the right shape', async (_what, target) => {
    const mw = cacheResponse({ redis: client, ttl: '1m', logger: quietLogger() });
    await expect(mw.invalidate(target as never)).rejects.toThrow(
      /invalidate\(\) takes \{ tags\?: string\[\], keys\?: string\[\] \}/,
    );
  });

  it.each([false, { max: 10 }] as const)(
    'takes a tags function returning one string as that one tag (l1: %p)',
    async (l1) => {
      const products = cacheResponse({
        redis: client,
        ttl: '1m',
        l1,
        tags: () => 'product:1',
        logger: quietLogger(),
      });
      let version = 1;
      const app = express();
      app.get('/p/1', products, (_req, res) => {
        res.send(`v${version}`);
      });
      await untilHit(app, '/p/1');
      version = 2;
      await products.invalidate({ tags: ['product:1'] });
      const after = await request(app).get('/p/1');
      expect(after.headers['x-cache']).toBe('MISS');
      expect(after.text).toBe('v2');
    },
  );

  it('does not cache a response whose tags function returns something else, and other routes of the cache still invalidate', async () => {
    const logger = quietLogger();
    const cache = createCache({ redis: client, l1: { max: 10 }, logger });
    const broken = cacheResponse({ cache, ttl: '1m', tags: () => ({ id: 1 }) as never });
    const good = cacheResponse({ cache, ttl: '1m', tags: () => ['product:1'] });
    let version = 1;
    const app = express();
    app.get('/broken', broken, (_req, res) => {
      res.send('broken');
    });
    app.get('/good', good, (_req, res) => {
      res.send(`v${version}`);
    });
    const events = captureEvents('cache');
    try {
      expect((await request(app).get('/broken')).text).toBe('broken');
      expect((await request(app).get('/broken')).headers['x-cache']).toBe('MISS');
      expect(logger.warnings.map((w) => w.message)).toContain(
        'the tags or shouldCache option threw; response not cached',
      );
      // Not "shouldCache": this cache has none, and it did not say no.
      const uncacheable = events.events.filter((e) => e.type === 'uncacheable');
      expect(uncacheable.map((e) => (e as { reason?: string }).reason)).toEqual([
        'option-threw',
        'option-threw',
      ]);
      await untilHit(app, '/good');
      version = 2;
      await good.invalidate({ tags: ['product:1'] });
      expect((await request(app).get('/good')).text).toBe('v2');
    } finally {
      events.stop();
    }
  });

  it('invalidates the tag an invalidates() selector returns as one string', async () => {
    const products = cacheResponse({
      redis: client,
      ttl: '1m',
      tags: () => ['product:7'],
      logger: quietLogger(),
    });
    let version = 1;
    const app = express();
    app.get('/p/:id', products, (_req, res) => {
      res.send(`v${version}`);
    });
    app.put(
      '/p/:id',
      products.invalidates((req) => `product:${req.params.id}`),
      (_req, res) => {
        version++;
        res.sendStatus(204);
      },
    );
    await untilHit(app, '/p/7');
    expect((await request(app).put('/p/7')).status).toBe(204);
    const after = await request(app).get('/p/7');
    expect(after.headers['x-cache']).toBe('MISS');
    expect(after.text).toBe('v2');
  });

  it('refuses methods: POST without a key function (the body is not in the default key)', () => {
    expect(() => cacheResponse({ redis: client, ttl: '1m', methods: ['GET', 'POST'] })).toThrow(
      /option "methods" includes POST, whose answer depends on the request body.*Pass a key function/,
    );
    expect(
      cacheResponse({
        redis: client,
        ttl: '1m',
        methods: ['POST'],
        key: (req) => `q ${JSON.stringify(req.body)}`,
      }).name,
    ).toBe('cacheResponse');
  });

  it('refuses settings of the shared cache given beside cache (they would not apply), and keeps those that do', async () => {
    const logger = quietLogger();
    const cache = createCache({ redis: client, timeout: '150ms', logger });
    for (const [name, value] of [
      ['timeout', 20],
      ['prefix', 'mine:'],
      ['lockTimeout', '1s'],
      ['l1', false],
      ['logger', quietLogger()],
    ] as const) {
      expect(() => cacheResponse({ cache, ttl: '1m', [name]: value })).toThrow(
        new RegExp(`option "${name}" differs from the shared cache's.*Set ${name} in createCache`),
      );
    }
    const other = (client as import('ioredis').Redis).duplicate();
    try {
      expect(() => cacheResponse({ cache, redis: other, ttl: '1m' })).toThrow(/option "redis" differs/);
    } finally {
      other.disconnect();
    }
    // The cache's own settings given again (one object of common settings spread into both) are no
    // conflict, jitter and name apply per middleware, and an undefined is no setting.
    const mw = cacheResponse({
      cache,
      redis: client,
      prefix: 'erk:',
      timeout: 150,
      lockTimeout: '5s',
      logger,
      l1: { max: 1000 },
      ttl: '1m',
      jitter: 0,
      name: 'page',
    });
    expect(cacheResponse({ cache, ttl: '1m', timeout: undefined }).name).toBe('cacheResponse');
    expect(() => cacheResponse({ cache, ttl: '1m', timeout: -1 })).toThrow(/option "timeout"/);
    const app = express().get('/r', mw, (_req, res) => {
      res.send('v1');
    });
    await untilHit(app, '/r');
  });

  it('does not store or serve a GET that carries a body (the default key leaves the body out, the route may read it)', async () => {
    const app = express();
    app.use(express.json());
    app.get('/search', cacheResponse({ redis: client, ttl: '1m', l1: false }), (req, res) => {
      res.json({ q: req.body?.q ?? req.query.q });
    });
    const poisoned = await request(app).get('/search?q=shoes').send({ q: '<img src=x onerror=alert(1)>' });
    expect(poisoned.headers['x-cache']).toBe('BYPASS');
    await sleep(100);
    const victim = await request(app).get('/search?q=shoes').expect(200);
    expect(victim.body.q).toBe('shoes');
    expect(victim.headers['x-cache']).toBe('MISS');
    expect((await untilHit(app, '/search?q=shoes')).body.q).toBe('shoes');
    // Served no entry either: the body may ask for something else.
    const withBody = await request(app).get('/search?q=shoes').send({ q: 'boots' });
    expect(withBody.headers['x-cache']).toBe('BYPASS');
    expect(withBody.body.q).toBe('boots');
  });

  it('refuses a name that is not a non-empty string', () => {
    expect(() => cacheResponse({ redis: client, ttl: '1m', name: 5 as never })).toThrow(
      /option "name" must be a non-empty string/,
    );
    expect(() => createCache({ redis: client, name: '' })).toThrow(
      /option "name" must be a non-empty string/,
    );
  });
});

describe('cacheResponse: the vary option', () => {
  function tenantApp(
    l1: false | { max: number },
    route: express.RequestHandler = (_req, _res, next) => next(),
  ) {
    const calls = { n: 0 };
    const mw = cacheResponse({
      redis: client,
      ttl: '1m',
      l1,
      vary: ['X-Tenant'],
      tags: (req) => ['report', `tenant:${req.headers['x-tenant']}`],
      logger: quietLogger(),
    });
    const app = express();
    app.get('/r', mw, route, (req, res) => {
      calls.n++;
      res.send(`${req.headers['x-tenant']} v${calls.n}`);
    });
    return { app, mw, calls };
  }
  const tenant = (t: string) => ({ 'X-Tenant': t });

  it.each([
    [
      'res.set',
      (_req: express.Request, res: express.Response, next: express.NextFunction) => {
        res.set('Vary', 'Accept-Language');
        next();
      },
    ],
    [
      'writeHead',
      (_req: express.Request, res: express.Response, next: express.NextFunction) => {
        const writeHead = res.writeHead;
        res.writeHead = function (this: express.Response, status: number) {
          return (writeHead as (...a: unknown[]) => express.Response).call(this, status, {
            Vary: 'Accept-Encoding',
          });
        } as typeof res.writeHead;
        next();
      },
    ],
  ])('keeps tenants apart when the route sets its own Vary (%s)', async (_how, route) => {
    for (const l1 of [false, { max: 10 }] as const) {
      await client.flushall();
      const { app } = tenantApp(l1, route);
      await untilHit(app, '/r', tenant('acme'));
      const other = await request(app).get('/r').set(tenant('globex'));
      expect(other.headers['x-cache']).toBe('MISS');
      expect(other.text).toMatch(/^globex /);
    }
  });

  it.each([false, { max: 10 }] as const)(
    'keyOf(req) names one value; its tag takes only that one, and a shared tag takes them all (l1: %p)',
    async (l1) => {
      const { app, mw } = tenantApp(l1);
      for (const t of ['a', 'b', 'c']) await untilHit(app, '/r', tenant(t));
      let key: string | undefined;
      const probe = express();
      probe.get('/r', (req, res) => {
        key = mw.keyOf(req);
        res.end();
      });
      await request(probe).get('/r').set(tenant('a'));
      expect(key).toBe('GET /r\nx-tenant: a');
      await mw.invalidate({ keys: [key!] });
      await mw.invalidate({ tags: ['tenant:b'] });
      const after = async () =>
        Promise.all(
          ['a', 'b', 'c'].map(async (t) => (await request(app).get('/r').set(tenant(t))).headers['x-cache']),
        );
      expect(await after()).toEqual(['MISS', 'MISS', 'HIT']);
      await mw.invalidate({ tags: ['report'] });
      expect((await request(app).get('/r').set(tenant('c'))).headers['x-cache']).toBe('MISS');
    },
  );

  it('serves a value from Redis in one command, also in a process that never saw the route answer', async () => {
    const { app } = tenantApp(false);
    await untilHit(app, '/r', tenant('de'));
    // Another instance: a new cache, as another process has.
    const other = tenantApp(false);
    const commands = await watchCommands(redis.plain());
    try {
      const hit = await request(other.app).get('/r').set(tenant('de'));
      expect(hit.headers['x-cache']).toBe('HIT');
      expect(hit.text).toBe('de v1');
      await sleep(50);
      expect(commands.seen.filter((c) => c !== 'monitor')).toEqual(['evalsha']);
    } finally {
      commands.stop();
    }
  });
});

describe('cacheResponse: pages carrying a per-request CSP nonce', () => {
  it("never stores an HTML page whose Content-Security-Policy has a nonce (helmet's cspNonce recipe), still JSON under the same policy", async () => {
    const app = express();
    app.use((_req, res, next) => {
      res.locals.cspNonce = randomBytes(16).toString('base64');
      next();
    });
    app.use(
      helmet({
        contentSecurityPolicy: {
          directives: {
            scriptSrc: ["'self'", (_req, res) => `'nonce-${(res as express.Response).locals.cspNonce}'`],
          },
        },
      }),
    );
    const cache = cacheResponse({ redis: client, ttl: '1m', logger: quietLogger() });
    app.get('/page', cache, (_req, res) => {
      res.type('html').send(`<script nonce="${res.locals.cspNonce}">go()</script>`);
    });
    app.get('/data', cache, (_req, res) => {
      res.json({ ok: true });
    });
    for (let i = 0; i < 3; i++) {
      const page = await request(app).get('/page').expect(200);
      // Never a HIT: the stored page's nonce would not be the one this answer's header allows.
      expect(page.headers['x-cache']).toBe('MISS');
      // The nonce in the page is the one its header allows.
      const nonce = /nonce="([^"]+)"/.exec(page.text)![1];
      expect(page.headers['content-security-policy']).toContain(`'nonce-${nonce}'`);
      await sleep(50);
    }
    expect((await untilHit(app, '/data')).body).toEqual({ ok: true });
  });
});
