import { randomBytes } from 'node:crypto';
import express, { type Request } from 'express';
import request from 'supertest';
import type { CacheResponseOptions } from '../../lib/cache';
import { cacheResponse } from '../../lib/cache';
import { decodeEntry, encodeEntry } from '../../lib/cache/entry';
import { entryKey } from '../../lib/cache/key';
import type { RedisClient } from '../../lib/client';
import { captureEvents } from '../helpers/events';
import { useFlushedClient, useRedisServer } from '../helpers/redis';
import { entryKeys, quietLogger, sleep, waitForKeys, watchCommands } from './helpers';

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

/** An app with one cached route whose handler is `handler` (counts its calls). */
function appWith(options: Partial<CacheResponseOptions>, handler: express.RequestHandler) {
  const calls = { n: 0 };
  const mw = cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger(), ...options });
  const app = express();
  app.get('/r', mw, (req, res, next) => {
    calls.n++;
    return handler(req, res, next);
  });
  return { app, mw, calls };
}

describe('cacheResponse: hit and miss', () => {
  it('answers MISS from the origin, then HIT from Redis with the same body, Age and a strong ETag', async () => {
    const { app, calls } = appWith({}, (_req, res) => {
      res.json({ n: 1 });
    });
    const first = await request(app).get('/r');
    expect(first.headers['x-cache']).toBe('MISS');
    expect(first.headers.etag).toMatch(/^"[A-Za-z0-9_-]+"$/);
    await waitForKeys(client, 'erk:c:*');
    const second = await request(app).get('/r');
    expect(second.headers['x-cache']).toBe('HIT');
    expect(second.body).toEqual({ n: 1 });
    expect(second.headers.age).toMatch(/^\d+$/);
    expect(second.headers.etag).toBe(first.headers.etag);
    expect(second.headers['content-type']).toMatch(/application\/json/);
    expect(calls.n).toBe(1);
  });

  it('costs exactly one Redis command for a hit from Redis', async () => {
    const { app } = appWith({}, (_req, res) => {
      res.send('x');
    });
    await request(app).get('/r');
    await waitForKeys(client, 'erk:c:*');
    await request(app).get('/r'); // loads the script once
    const commands = await watchCommands(redis.plain());
    try {
      const hit = await request(app).get('/r');
      expect(hit.headers['x-cache']).toBe('HIT');
      await sleep(50);
      expect(commands.seen).toEqual(['evalsha']);
    } finally {
      commands.stop();
    }
  });

  it.each([
    ['a new marker', ['en']],
    ['a known marker', ['en', 'fr']],
  ])(
    'stores a varying response under %s with one call per tag plus the store, and its tags reach the variant',
    async (_name, langs) => {
      const tags = ['products', 'page:r'];
      const { app, mw } = appWith({ tags: () => tags }, (req, res) => {
        res.vary('X-Lang').send(`in ${req.headers['x-lang']}`);
      });
      const events = captureEvents('cache');
      for (const [i, lang] of langs.slice(0, -1).entries()) {
        await request(app).get('/r').set('X-Lang', lang);
        await events.waitFor('store', i + 1);
      }
      const commands = await watchCommands(redis.plain());
      try {
        const miss = await request(app)
          .get('/r')
          .set('X-Lang', langs[langs.length - 1] as string);
        expect(miss.headers['x-cache']).toBe('MISS');
        await events.waitFor('store', langs.length);
        await sleep(100);
        // One lookup, one registration per tag, one store (scripts load on first use: EVAL or EVALSHA).
        expect(commands.seen.filter((c) => c !== 'script')).toHaveLength(1 + tags.length + 1);
      } finally {
        commands.stop();
        events.stop();
      }
      const variants = await client.keys('erk:c:*:v:*');
      expect(variants).toHaveLength(langs.length);
      for (const tag of tags) {
        expect(await client.smembers(`erk:t:{${tag}}`)).toEqual(expect.arrayContaining(variants));
      }
      await mw.invalidate({ tags: ['products'] });
      expect(await client.keys('erk:c:*')).toEqual([]);
    },
  );

  it('never brings back the variants of a marker an invalidation deleted, when a fill stores late under its generation', async () => {
    const { app, mw } = appWith({}, (req, res) => {
      res.vary('X-Lang').send(`in ${req.headers['x-lang']}`);
    });
    await request(app).get('/r').set('X-Lang', 'en');
    await request(app).get('/r').set('X-Lang', 'fr');
    const redisKey = entryKey('erk:', 'GET /r');
    await waitForKeys(client, 'erk:c:*:v:*', 2);
    const marker = String(await client.get(redisKey));
    const generation = marker.slice(4, marker.indexOf('\n'));
    const variant = (await client.keys('erk:c:*:v:*'))[0] as string;
    const entry = decodeEntry((await client.getBuffer(variant)) as Buffer);
    await mw.invalidate({ keys: ['GET /r'] }); // deletes the marker; its variants linger until their ttl
    expect(await client.keys('erk:c:*:v:*')).toHaveLength(2);
    // A fill without the lock that looked up before the invalidation, storing after it.
    const lang = /in (\w+)/.exec(entry.body.toString())?.[1] as string;
    const vary = { names: ['x-lang'], values: [lang], generation };
    expect(await mw.cache.store(redisKey, entry, '', vary)).toBe('stored');
    const other = lang === 'en' ? 'fr' : 'en';
    const read = await request(app).get('/r').set('X-Lang', other);
    expect(read.headers['x-cache']).toBe('MISS');
    expect(read.text).toBe(`in ${other}`);
  });

  it('serves from L1 without touching Redis, and emits l1-hit', async () => {
    const { app, mw, calls } = appWith({ l1: { max: 10 } }, (_req, res) => {
      res.send('local');
    });
    // L1 is on once the invalidation channel is subscribed.
    await mw.cache.ready();
    const { events, stop } = captureEvents('cache');
    try {
      await request(app).get('/r');
      await waitForKeys(client, 'erk:c:*');
      await client.flushall(); // L1 alone must answer now
      const hit = await request(app).get('/r');
      expect(hit.headers['x-cache']).toBe('HIT');
      expect(hit.text).toBe('local');
      expect(calls.n).toBe(1);
      expect(events.map((e) => e.type)).toEqual(expect.arrayContaining(['miss', 'store', 'l1-hit']));
    } finally {
      stop();
    }
  });

  it('answers If-Modified-Since with 304 on hits as the origin does, unless If-None-Match is sent', async () => {
    const modified = new Date(Date.now() - 60_000).toUTCString();
    const { app, calls } = appWith({}, (_req, res) => {
      res.set('Last-Modified', modified).send('dated body');
    });
    // The route's own answer to a conditional miss: Express's 304. It says nothing about the next
    // request, so no no-store marker keeps other misses off the fill lock.
    const conditionalMiss = await request(app).get('/r').set('If-Modified-Since', modified);
    expect([conditionalMiss.status, conditionalMiss.headers['x-cache']]).toEqual([304, 'MISS']);
    await sleep(50);
    expect(await client.keys('erk:c:*:nostore')).toEqual([]);
    await request(app).get('/r');
    await waitForKeys(client, 'erk:c:*');
    const same = await request(app).get('/r').set('If-Modified-Since', modified);
    expect([same.status, same.headers['x-cache'], same.text]).toEqual([304, 'HIT', '']);
    const later = await request(app).get('/r').set('If-Modified-Since', new Date().toUTCString());
    expect(later.status).toBe(304);
    const earlier = new Date(Date.now() - 120_000).toUTCString();
    const older = await request(app).get('/r').set('If-Modified-Since', earlier);
    expect([older.status, older.text]).toEqual([200, 'dated body']);
    for (const bad of ['yesterday', '']) {
      expect((await request(app).get('/r').set('If-Modified-Since', bad)).status).toBe(200);
    }
    // If-None-Match decides alone when both are sent (RFC 9110 §13.1.3).
    const both = await request(app)
      .get('/r')
      .set('If-Modified-Since', modified)
      .set('If-None-Match', '"other"');
    expect([both.status, both.headers['x-cache']]).toEqual([200, 'HIT']);
    expect(calls.n).toBe(2);
  });

  it("leaves the no-store marker after a route's own 304 when more than its status refuses it (Set-Cookie)", async () => {
    const { app } = appWith({}, (_req, res) => {
      res.cookie('seen', '1').set('ETag', '"v1"').send('personal');
    });
    const revalidated = await request(app).get('/r').set('If-None-Match', '"v1"');
    expect([revalidated.status, revalidated.headers['x-cache']]).toEqual([304, 'MISS']);
    await waitForKeys(client, 'erk:c:*:nostore');
  });

  it('leaves the no-store marker after a 304 that middleware in front gives a Set-Cookie as its headers go out', async () => {
    const mw = cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() });
    const app = express();
    app.use((_req, res, next) => {
      // As express-session does (through on-headers): the cookie is set inside writeHead.
      const writeHead = res.writeHead;
      res.writeHead = function (this: express.Response, ...args: unknown[]) {
        this.setHeader('Set-Cookie', 'sid=abc; Path=/');
        return (writeHead as (...a: unknown[]) => express.Response).apply(this, args);
      } as typeof res.writeHead;
      next();
    });
    app.get('/r', mw, (_req, res) => {
      res.set('ETag', '"v1"').send('personal');
    });
    const revalidated = await request(app).get('/r').set('If-None-Match', '"v1"');
    expect([revalidated.status, revalidated.headers['x-cache']]).toEqual([304, 'MISS']);
    expect(revalidated.headers['set-cookie']).toBeDefined();
    await waitForKeys(client, 'erk:c:*:nostore');
  });

  it('answers If-None-Match with 304 on hits, and on a miss whose fresh body matches', async () => {
    const { app, mw, calls } = appWith({}, (_req, res) => {
      res.send('same body');
    });
    const first = await request(app).get('/r');
    const etag = first.headers.etag as string;
    await waitForKeys(client, 'erk:c:*');
    const hit = await request(app).get('/r').set('If-None-Match', etag);
    expect(hit.status).toBe(304);
    expect(hit.headers['x-cache']).toBe('HIT');
    expect(hit.headers.etag).toBe(etag);
    expect(hit.text).toBe('');
    await mw.invalidate({ keys: ['GET /r'] });
    const miss = await request(app).get('/r').set('If-None-Match', `W/"other", ${etag}`);
    expect(miss.status).toBe(304);
    expect(miss.headers['x-cache']).toBe('MISS');
    expect(calls.n).toBe(2);
    const changed = await request(app).get('/r').set('If-None-Match', '"nope"');
    expect(changed.status).toBe(200);
    expect(changed.text).toBe('same body');
  });

  it('serves HEAD from the GET entry (headers, no body) and passes a cold HEAD through', async () => {
    const { app, calls } = appWith({}, (_req, res) => {
      res.type('text/plain').send('twelve bytes');
    });
    const cold = await request(app).head('/r');
    expect(cold.status).toBe(200);
    expect(cold.headers['x-cache']).toBe('MISS');
    expect(await client.keys('erk:c:*')).toEqual([]);
    await request(app).get('/r');
    await waitForKeys(client, 'erk:c:*');
    const head = await request(app).head('/r');
    expect(head.headers['x-cache']).toBe('HIT');
    expect(head.headers['content-length']).toBe('12');
    expect(head.text).toBeUndefined();
    expect(calls.n).toBe(2);
  });

  it('round-trips a binary body byte for byte', async () => {
    const bytes = Buffer.concat([Buffer.from([0, 255, 0x0d, 0x0a, 0xc3, 0x28]), randomBytes(64 * 1024)]);
    const { app } = appWith({}, (_req, res) => {
      res.type('application/octet-stream').send(bytes);
    });
    const parse = (res: request.Response, cb: (e: Error | null, b: Buffer) => void) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => cb(null, Buffer.concat(chunks)));
    };
    const first = await request(app).get('/r').buffer(true).parse(parse);
    await waitForKeys(client, 'erk:c:*');
    const hit = await request(app).get('/r').buffer(true).parse(parse);
    expect(hit.headers['x-cache']).toBe('HIT');
    expect(Buffer.compare(first.body as Buffer, bytes)).toBe(0);
    expect(Buffer.compare(hit.body as Buffer, bytes)).toBe(0);
  });
});

describe('cacheResponse: keys', () => {
  it('normalises the query: parameter order does not matter, but repeated values keep their order', async () => {
    const { app, calls } = appWith({ l1: { max: 10 } }, (req, res) => {
      res.json(req.query);
    });
    await request(app).get('/r?b=2&a=1');
    expect((await request(app).get('/r?a=1&b=2')).headers['x-cache']).toBe('HIT');
    expect((await request(app).get('/r?a=%31&b=2')).headers['x-cache']).toBe('HIT');
    expect(calls.n).toBe(1);
    await request(app).get('/r?a=1&a=2');
    const other = await request(app).get('/r?a=2&a=1');
    expect(other.headers['x-cache']).toBe('MISS');
    expect(other.body).toEqual({ a: ['2', '1'] });
    expect(calls.n).toBe(3);
  });

  it('with `query`, passes a request carrying any other parameter to the route uncached (cache-busting adds nothing to Redis)', async () => {
    const { app, calls } = appWith({ query: ['page', 'sort'] }, (req, res) => {
      res.json(req.query);
    });
    expect((await request(app).get('/r?page=2')).headers['x-cache']).toBe('MISS');
    await waitForKeys(client, 'erk:c:*');
    expect((await request(app).get('/r?page=2')).headers['x-cache']).toBe('HIT');
    expect((await request(app).get('/r?sort[]=a&page=2')).headers['x-cache']).toBe('MISS');
    await sleep(50);
    const before = (await entryKeys(client)).length;
    for (const busted of ['/r?page=2&cb=1', '/r?cb=2', '/r?page=2&c%62=3', '/r?%FF=1']) {
      const res = await request(app).get(busted);
      expect([busted, res.headers['x-cache']]).toEqual([busted, 'BYPASS']);
    }
    await sleep(50);
    expect((await entryKeys(client)).length).toBe(before);
    expect(calls.n).toBe(6);
    for (const query of ['page', [''], [1]]) {
      expect(() => cacheResponse({ redis: client, ttl: '1m', query: query as never })).toThrow(
        /option "query" must be an array of query parameter names/,
      );
    }
  });

  it('splits the key by the request headers named in `vary`', async () => {
    const { app, calls } = appWith({ vary: ['Accept-Language'], l1: { max: 10 } }, (req, res) => {
      res.send(`lang=${req.headers['accept-language']}`);
    });
    expect((await request(app).get('/r').set('Accept-Language', 'fr')).text).toBe('lang=fr');
    const de = await request(app).get('/r').set('Accept-Language', 'de');
    expect(de.text).toBe('lang=de');
    expect(de.headers['x-cache']).toBe('MISS');
    const fr = await request(app).get('/r').set('Accept-Language', 'fr');
    expect(fr.headers['x-cache']).toBe('HIT');
    expect(fr.text).toBe('lang=fr');
    expect(calls.n).toBe(2);
  });

  it("honours the response's own Vary, in Redis and in L1", async () => {
    for (const l1 of [false, { max: 10 }] as const) {
      await client.flushall();
      const { app, calls } = appWith({ l1 }, (req, res) => {
        res.vary('X-Variant').send(`variant ${req.headers['x-variant'] ?? 'none'}`);
      });
      const get = (v?: string) => (v ? request(app).get('/r').set('X-Variant', v) : request(app).get('/r'));
      expect((await get('a')).text).toBe('variant a');
      await waitForKeys(client, 'erk:c:*:v:*');
      expect((await get('b')).text).toBe('variant b');
      await waitForKeys(client, 'erk:c:*:v:*', 2);
      expect((await get()).text).toBe('variant none');
      await waitForKeys(client, 'erk:c:*:v:*', 3);
      for (const v of ['a', 'b', undefined]) {
        const hit = await get(v);
        expect(hit.headers['x-cache']).toBe('HIT');
        expect(hit.text).toBe(`variant ${v ?? 'none'}`);
      }
      expect(calls.n).toBe(3);
    }
  });

  it('never serves one user the response cached for another when a scope is given', async () => {
    const { app, calls } = appWith(
      { scope: (req: Request) => req.headers['x-user'] as string | undefined, l1: { max: 10 } },
      (req, res) => {
        res.send(`hello ${req.headers['x-user']}`);
      },
    );
    const as = (user: string) =>
      request(app).get('/r').set('X-User', user).set('Authorization', `Bearer ${user}`);
    expect((await as('alice')).text).toBe('hello alice');
    expect((await as('bob')).text).toBe('hello bob');
    const alice = await as('alice');
    expect(alice.headers['x-cache']).toBe('HIT');
    expect(alice.text).toBe('hello alice');
    const bob = await as('bob');
    expect(bob.text).toBe('hello bob');
    expect(calls.n).toBe(2);
    const anonymous = await request(app).get('/r');
    expect(anonymous.headers['x-cache']).toBe('BYPASS');
  });
});

describe('cacheResponse: what is never stored', () => {
  const cases: Array<[string, express.RequestHandler]> = [
    ['Set-Cookie', (_req, res) => void res.cookie('a', 'b').send('x')],
    ['Cache-Control: no-store', (_req, res) => void res.set('Cache-Control', 'no-store').send('x')],
    ['Cache-Control: private', (_req, res) => void res.set('Cache-Control', 'private, max-age=60').send('x')],
    ['a 5xx status', (_req, res) => void res.status(503).send('x')],
    ['a 404 status', (_req, res) => void res.status(404).send('x')],
    ['Vary: *', (_req, res) => void res.set('Vary', '*').send('x')],
    ['Server-Sent Events', (_req, res) => void res.type('text/event-stream').send('data: x\n\n')],
  ];
  it.each(cases)('does not cache a response with %s', async (_name, handler) => {
    const { app, calls } = appWith({ l1: { max: 10 } }, handler);
    await request(app).get('/r');
    await sleep(50);
    const again = await request(app).get('/r');
    expect(again.headers['x-cache']).toBe('MISS');
    expect(calls.n).toBe(2);
    expect(await entryKeys(client)).toEqual([]);
  });

  it.each([
    ['Authorization', { Authorization: 'Bearer t' }],
    ['a session cookie', { Cookie: 'theme=dark; connect.sid=s%3Aabc' }],
  ])('bypasses requests carrying %s unless a scope or key is given', async (_name, headers) => {
    const { app, calls } = appWith({ l1: { max: 10 } }, (_req, res) => {
      res.send('secret');
    });
    for (let i = 0; i < 2; i++) {
      const res = await request(app).get('/r').set(headers);
      expect(res.headers['x-cache']).toBe('BYPASS');
    }
    expect(calls.n).toBe(2);
    expect(await client.keys('erk:*')).toEqual([]);
    // A plain cookie is fine.
    await request(app).get('/r').set('Cookie', 'theme=dark');
    expect((await request(app).get('/r').set('Cookie', 'theme=dark')).headers['x-cache']).toBe('HIT');
  });

  it('does not store Date, hop-by-hop headers or headers set by middleware in front of it', async () => {
    const mw = cacheResponse({ redis: client, ttl: '1m', l1: false });
    const app = express();
    let id = 0;
    app.use((_req, res, next) => {
      res.set('X-Request-Id', String(++id));
      next();
    });
    app.get('/r', mw, (_req, res) => {
      res.set({
        'X-Route': 'yes',
        Connection: 'keep-alive',
        'Keep-Alive': 'timeout=5',
        Date: 'Thu, 01 Jan 1970 00:00:00 GMT',
      });
      res.send('x');
    });
    await request(app).get('/r');
    await waitForKeys(client, 'erk:c:*');
    const hit = await request(app).get('/r');
    expect(hit.headers['x-cache']).toBe('HIT');
    expect(hit.headers['x-route']).toBe('yes');
    expect(hit.headers['x-request-id']).toBe('2');
    expect(hit.headers.date).not.toBe('Thu, 01 Jan 1970 00:00:00 GMT');
    expect(hit.headers['keep-alive']).toBeUndefined();
    const raw = (await client.getBuffer(entryKey('erk:', 'GET /r')))!.toString('latin1');
    expect(raw).not.toMatch(/keep-alive|x-request-id|1970/i);
  });

  it.each([
    ['Redis', false],
    ['L1', true],
  ])(
    'keeps every value of a repeated header on a hit from %s (two Link headers, not only the last)',
    async (_from, l1) => {
      const mw = cacheResponse({
        redis: client,
        ttl: '1m',
        l1: l1 ? { max: 10 } : false,
        logger: quietLogger(),
      });
      const app = express();
      app.get('/r', mw, (_req, res) => {
        res.append('Link', '</a.css>; rel=preload');
        res.append('Link', '</b.js>; rel=preload');
        res.send('x');
      });
      const miss = await request(app).get('/r');
      await waitForKeys(client, 'erk:c:*');
      const hit = await request(app).get('/r');
      expect(hit.headers['x-cache']).toBe('HIT');
      expect(hit.headers.link).toBe(miss.headers.link);
      expect(hit.headers.link).toBe('</a.css>; rel=preload, </b.js>; rel=preload');
    },
  );

  it("keeps every value of a name repeated in writeHead's list on the miss and the hit", async () => {
    const { app } = appWith({}, (_req, res) => {
      res.writeHead(200, [
        'Link',
        '</a.css>; rel=preload',
        'Link',
        '</b.js>; rel=preload',
        'Content-Type',
        'text/plain',
      ]);
      res.end('x');
    });
    const miss = await request(app).get('/r');
    await waitForKeys(client, 'erk:c:*');
    const hit = await request(app).get('/r');
    expect(hit.headers['x-cache']).toBe('HIT');
    for (const answer of [miss, hit])
      expect(answer.headers.link).toBe('</a.css>; rel=preload, </b.js>; rel=preload');
  });

  it('removes on hits, 304s and ranges a header that middleware in front set and the route removed', async () => {
    const mw = cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() });
    const app = express();
    app.use((_req, res, next) => {
      res.set({ 'Cache-Control': 'no-cache', 'X-Front': 'f', 'X-Kept': 'k' });
      next();
    });
    app.get('/r', mw, (_req, res) => {
      res.removeHeader('X-Front');
      res.set('Cache-Control', 'public, max-age=60');
      res.send('abcdef');
    });
    const miss = await request(app).get('/r');
    expect(miss.headers['x-front']).toBeUndefined();
    await waitForKeys(client, 'erk:c:*');
    const hit = await request(app).get('/r');
    expect(hit.headers['x-cache']).toBe('HIT');
    expect(hit.headers['x-front']).toBeUndefined();
    expect(hit.headers['x-kept']).toBe('k');
    expect(hit.headers['cache-control']).toBe('public, max-age=60');
    const notModified = await request(app).get('/r').set('If-None-Match', String(miss.headers.etag));
    expect(notModified.status).toBe(304);
    expect(notModified.headers['x-front']).toBeUndefined();
    const part = await request(app).get('/r').set({ Range: 'bytes=0-1', 'Accept-Encoding': 'identity' });
    expect(part.status).toBe(206);
    expect(part.headers['x-front']).toBeUndefined();
    expect(part.headers['x-kept']).toBe('k');
  });

  it('respects shouldCache', async () => {
    const { app, calls } = appWith(
      { shouldCache: (_req, res) => res.get('X-Cacheable') === 'yes' },
      (_req, res) => {
        res.send('x');
      },
    );
    await request(app).get('/r');
    await request(app).get('/r');
    expect(calls.n).toBe(2);
  });
});

describe('cacheResponse: big and streamed bodies', () => {
  it('passes a body above maxBodySize through uncached and complete', async () => {
    const big = 'z'.repeat(5000);
    const { app, calls } = appWith({ maxBodySize: 1000 }, (_req, res) => {
      res.send(big);
    });
    const first = await request(app).get('/r');
    expect(first.text).toBe(big);
    await sleep(50);
    expect((await request(app).get('/r')).headers['x-cache']).toBe('MISS');
    expect(calls.n).toBe(2);
  });

  it('streams chunked writes to the client as they come and stops buffering beyond maxBodySize', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const { app, calls } = appWith({ maxBodySize: 100 }, async (_req, res) => {
      res.type('text/plain');
      for (let i = 0; i < 20; i++) res.write('0123456789');
      await gate;
      res.end('end');
    });
    const received: string[] = [];
    const pending = request(app)
      .get('/r')
      .buffer(true)
      .parse((res, cb) => {
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          received.push(c);
          if (received.join('').length >= 200) release();
        });
        res.on('end', () => cb(null, received.join('')));
      });
    const done = await pending;
    expect(done.body).toBe(`${'0123456789'.repeat(20)}end`);
    await sleep(50);
    expect(await entryKeys(client)).toEqual([]);
    expect(calls.n).toBe(1);
  });

  it('caches a small response written in several chunks', async () => {
    const { app, calls } = appWith({}, (_req, res) => {
      res.type('text/plain');
      res.write('a');
      res.write(Buffer.from('b'));
      res.end('c');
    });
    expect((await request(app).get('/r')).text).toBe('abc');
    await waitForKeys(client, 'erk:c:*');
    const hit = await request(app).get('/r');
    expect(hit.headers['x-cache']).toBe('HIT');
    expect(hit.text).toBe('abc');
    expect(hit.headers.etag).toMatch(/^"/);
    expect(calls.n).toBe(1);
  });
});

describe('cacheResponse: corrupt entries', () => {
  it.each([
    ['garbage', () => Buffer.from('not an entry at all')],
    ['a truncated entry', (valid: Buffer) => valid.subarray(0, valid.length - 3)],
    ['a foreign JSON value', () => Buffer.from('{"status":200}')],
    [
      'a well-framed entry with an impossible status',
      (valid: Buffer) => encodeEntry({ ...decodeEntry(valid), status: 99 }),
    ],
    [
      'a well-framed entry with a header value Node refuses',
      (valid: Buffer) =>
        encodeEntry({ ...decodeEntry(valid), headers: [['x-evil', 'a\r\nSet-Cookie: s=1']] }),
    ],
  ])('treats %s as a miss, deletes it and logs it — never a 500', async (_name, poison) => {
    const logger = quietLogger();
    const { app, calls } = appWith({ logger }, (_req, res) => {
      res.send('fresh');
    });
    await request(app).get('/r');
    const key = entryKey('erk:', 'GET /r');
    await waitForKeys(client, 'erk:c:*');
    const valid = (await client.getBuffer(key))!;
    await client.set(key, poison(valid), 'PX', 60_000);
    const res = await request(app).get('/r');
    expect(res.status).toBe(200);
    expect(res.text).toBe('fresh');
    expect(res.headers['x-cache']).toBe('MISS');
    expect(calls.n).toBe(2);
    expect(logger.warnings.map((w) => w.message).join()).toMatch(/corrupt/);
    await sleep(50);
    expect((await request(app).get('/r')).headers['x-cache']).toBe('HIT');
  });
});

describe('cacheResponse: options', () => {
  it('validates options at construction, naming the option', () => {
    expect(() => cacheResponse({ redis: client } as CacheResponseOptions)).toThrow(/"ttl"/);
    expect(() => cacheResponse({ ttl: '1m' })).toThrow(/"redis"/);
    expect(() => cacheResponse({ redis: client, ttl: 'soon' })).toThrow(TypeError);
    expect(() => cacheResponse({ redis: client, ttl: '1m', jitter: 2 })).toThrow(/"jitter"/);
    expect(() => cacheResponse({ redis: client, ttl: '1m', maxBodySize: -1 })).toThrow(RangeError);
    expect(() => cacheResponse({ redis: client, ttl: '1m', statuses: [200, 600] })).toThrow(RangeError);
    expect(() => cacheResponse({ redis: client, ttl: '1m', statuses: [99] })).toThrow(/"statuses" holds 99/);
    expect(() => cacheResponse({ redis: client, ttl: '1m', statuses: ['200'] as never })).toThrow(TypeError);
    // Redis refuses a value over 512 MB and drops the connection every middleware shares.
    expect(() => cacheResponse({ redis: client, ttl: '1m', maxBodySize: 2 ** 30 })).toThrow(
      /option "maxBodySize".*512 MB/,
    );
    expect(() => cacheResponse({ redis: client, ttl: '1m', vary: ['bad header'] })).toThrow(/"vary"/);
    expect(() => cacheResponse({ redis: client, ttl: '1m', prefix: '{x}' })).toThrow(/"prefix"/);
    expect(() => cacheResponse({ redis: client, ttl: '1m', l1: { max: 0 } })).toThrow(/"l1.max"/);
    // A number-shaped string (from an environment variable) is a wrong type, not a wrong amount.
    expect(() => cacheResponse({ redis: client, ttl: '1m', l1: { max: 0 } })).toThrow(RangeError);
    expect(() => cacheResponse({ redis: client, ttl: '1m', l1: { max: '10' as never } })).toThrow(TypeError);
    expect(() => cacheResponse({ redis: client, ttl: '1m', jitter: '0.1' as never })).toThrow(TypeError);
    expect(() => cacheResponse({ redis: client, ttl: '1m', maxBodySize: '1e6' as never })).toThrow(TypeError);
    expect(cacheResponse({ redis: client, ttl: '1m', l1: false }).name).toBe('cacheResponse');
  });
});
