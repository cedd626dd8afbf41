import express from 'express';
import request from 'supertest';
import { cacheResponse, createCache } from '../../lib/cache';
import { tagKey } from '../../lib/cache/key';
import { addToTag, forgetTaken, takeTag } from '../../lib/cache/tags';
import type { RedisClient } from '../../lib/client';
import { eventually, useFlushedClient, useRedisServer } from '../helpers/redis';
import { quietLogger, waitForKeys } from './helpers';

const redis = useRedisServer();
let admin: RedisClient;
useFlushedClient(redis, (c) => {
  admin = c;
});

/** One app instance with its own client, L1 and bus: GET /products/:id cached and tagged, PUT invalidates. */
async function instance(origin: { version: number; calls: number }) {
  const client = redis.client();
  const products = cacheResponse({
    redis: client,
    ttl: '10m',
    l1: { max: 100 },
    tags: (req) => [`product:${req.params.id}`, 'products'],
    logger: quietLogger(),
  });
  await products.cache.ready();
  const app = express();
  app.get('/products/:id', products, (req, res) => {
    origin.calls++;
    res.json({ id: req.params.id, version: origin.version });
  });
  app.put(
    '/products/:id',
    products.invalidates((req) => [`product:${req.params.id}`]),
    (req, res) => {
      if (req.query.fail) return void res.status(400).json({ error: 'bad' });
      // A login guard's answer to an anonymous write: nothing was written.
      if (req.query.anonymous) return void res.redirect(302, '/login');
      origin.version++;
      // A form post answers with a redirect to the page it changed (Post/Redirect/Get).
      if (req.query.form) return void res.redirect(303, `/products/${req.params.id}`);
      res.status(204).end();
    },
  );
  return { app, products, client };
}

describe('invalidation', () => {
  it("drops a tag's entries from Redis and from a second instance's L1 within milliseconds", async () => {
    const origin = { version: 1, calls: 0 };
    const a = await instance(origin);
    const b = await instance(origin);
    await request(a.app).get('/products/42');
    await waitForKeys(admin, 'erk:t:*', 2);
    // b reads it from Redis once, then serves it from its own L1.
    expect((await request(b.app).get('/products/42')).headers['x-cache']).toBe('HIT');
    expect(b.products.cache.l1!.size).toBe(1);
    await admin.flushall(); // from now on only L1 can answer a hit on b
    expect((await request(b.app).get('/products/42')).headers['x-cache']).toBe('HIT');

    origin.version = 2;
    await a.products.invalidate({ tags: ['product:42'] });
    await eventually(() => b.products.cache.l1!.size === 0, "b's L1 to drop the entry", 1000);
    const after = await request(b.app).get('/products/42');
    expect(after.headers['x-cache']).toBe('MISS');
    expect(after.body.version).toBe(2);
  });

  it('deletes the entries and the tag sets in Redis', async () => {
    const origin = { version: 1, calls: 0 };
    const a = await instance(origin);
    await request(a.app).get('/products/1');
    await request(a.app).get('/products/2');
    await waitForKeys(admin, 'erk:c:*', 2);
    await waitForKeys(admin, 'erk:t:*', 3);
    await a.products.invalidate({ tags: ['products'] });
    expect(await admin.keys('erk:c:*')).toEqual([]);
    expect(await admin.keys('erk:t:{products}')).toEqual([]);
  });

  it('gives every tag set a TTL at least as long as its entries', async () => {
    const origin = { version: 1, calls: 0 };
    const a = await instance(origin);
    await request(a.app).get('/products/7');
    const [tag] = await waitForKeys(admin, 'erk:t:{product:7}');
    const ttl = await admin.pttl(tag!);
    expect(ttl).toBeGreaterThan(9 * 60_000);
    for (const key of await admin.keys('erk:*')) expect(await admin.pttl(key)).toBeGreaterThan(0);
  });

  it('invalidates on a write only after it succeeded (not on a 400), before the client sees the answer', async () => {
    const origin = { version: 1, calls: 0 };
    const a = await instance(origin);
    const b = await instance(origin);
    await request(a.app).get('/products/5');
    await waitForKeys(admin, 'erk:c:*');
    expect((await request(b.app).get('/products/5')).headers['x-cache']).toBe('HIT');

    expect((await request(a.app).put('/products/5?fail=1')).status).toBe(400);
    expect((await request(a.app).get('/products/5')).headers['x-cache']).toBe('HIT');

    expect((await request(a.app).put('/products/5')).status).toBe(204);
    const read = await request(a.app).get('/products/5');
    expect(read.headers['x-cache']).toBe('MISS');
    expect(read.body.version).toBe(2);
    await eventually(
      async () => (await request(b.app).get('/products/5')).body.version === 2,
      'b to see version 2',
      1000,
    );
  });

  it("a write answered with 303 (after a form post) invalidates; a login guard's 302 does not", async () => {
    const origin = { version: 1, calls: 0 };
    const a = await instance(origin);
    await request(a.app).get('/products/6');
    expect((await request(a.app).get('/products/6')).headers['x-cache']).toBe('HIT');
    expect((await request(a.app).put('/products/6?anonymous=1')).status).toBe(302);
    expect((await request(a.app).get('/products/6')).headers['x-cache']).toBe('HIT');
    expect((await request(a.app).put('/products/6?form=1')).status).toBe(303);
    const read = await request(a.app).get('/products/6');
    expect(read.headers['x-cache']).toBe('MISS');
    expect(read.body.version).toBe(2);
  });

  it('invalidates by cache key, and a Vary marker takes all its variants with it', async () => {
    const client = redis.client();
    const mw = cacheResponse({ redis: client, ttl: '1m', l1: false });
    let calls = 0;
    const app = express();
    app.get('/v', mw, (req, res) => {
      calls++;
      res.vary('X-Lang').send(`${req.headers['x-lang']}`);
    });
    await request(app).get('/v').set('X-Lang', 'en');
    await request(app).get('/v').set('X-Lang', 'fr');
    await waitForKeys(admin, 'erk:c:*:v:*', 2);
    await mw.invalidate({ keys: ['GET /v'] });
    expect((await request(app).get('/v').set('X-Lang', 'fr')).headers['x-cache']).toBe('MISS');
    expect((await request(app).get('/v').set('X-Lang', 'en')).headers['x-cache']).toBe('MISS');
    expect(calls).toBe(4);
  });

  it('shares one cache between wrap() and middlewares: tags and keys reach both', async () => {
    const client = redis.client();
    const cache = createCache({ redis: client, l1: { max: 10 } });
    let built = 0;
    const report = () =>
      cache.wrap('report:2025', async () => ({ built: ++built }), { ttl: '1m', tags: ['reports'] });
    const page = cacheResponse({ cache, ttl: '1m', tags: () => ['reports'] });
    let rendered = 0;
    const app = express();
    app.get('/reports', page, (_req, res) => {
      res.send(`page ${++rendered}`);
    });
    expect(await report()).toEqual({ built: 1 });
    expect(await report()).toEqual({ built: 1 });
    await request(app).get('/reports');
    expect((await request(app).get('/reports')).headers['x-cache']).toBe('HIT');
    await waitForKeys(admin, 'erk:t:{reports}');
    await cache.invalidate({ tags: ['reports'] });
    expect(await report()).toEqual({ built: 2 });
    expect((await request(app).get('/reports')).text).toBe('page 2');
    await cache.invalidate({ keys: ['report:2025'] });
    expect(await report()).toEqual({ built: 3 });
  });
});

describe('an invalidation whose reply is lost', () => {
  it('a tag take that timed out but landed leaves its members to the next invalidation, which deletes them', async () => {
    const client = redis.client();
    client.on('error', () => {});
    const cache = createCache({ redis: client, l1: false, timeout: '100ms' });
    let built = 0;
    const report = () => cache.wrap('r', async () => ({ built: ++built }), { ttl: '10m', tags: ['lost'] });
    expect(await report()).toEqual({ built: 1 });
    await waitForKeys(admin, 'erk:t:{lost}');
    // Invalidation waits max(timeout, 2 s): the take is held past that, then runs.
    await admin.client('PAUSE', 2600, 'WRITE');
    await expect(cache.invalidate({ tags: ['lost'] })).rejects.toThrow();
    await eventually(async () => (await admin.exists('erk:t:{lost}')) === 0, 'the late take to land', 3000);
    // The tag set is gone, but the entry it named still lives: the invalidation did not finish.
    expect(await report()).toEqual({ built: 1 });
    await cache.invalidate({ tags: ['lost'] });
    expect(await report()).toEqual({ built: 2 });
    await eventually(
      async () => (await admin.exists('erk:t:{lost}:taken')) === 0,
      'taken members forgotten',
      1000,
    );
  });
});

describe('clean-up after a tag invalidation', () => {
  it("an older invalidation's clean-up does not erase the members a newer one left for its retry", async () => {
    const tag = tagKey('erk:', 'race');
    await addToTag(admin, tag, 600_000, ['erk:c:{k1}'], undefined);
    const older = await takeTag(admin, tag, 60_000);
    await addToTag(admin, tag, 600_000, ['erk:c:{k1}'], undefined); // a fill after it, same key
    const newer = await takeTag(admin, tag, 60_000); // its reply is lost: nothing unlinked
    expect(newer.members).toEqual(['erk:c:{k1}']);
    await forgetTaken(admin, tag, older); // the older one's clean-up lands late
    expect((await takeTag(admin, tag, 60_000)).members).toEqual(['erk:c:{k1}']);
  });

  it('tells takes apart even many within one millisecond, without moving the marker ahead of Redis time', async () => {
    // Equal identities would let an older take's clean-up pass for the newer one's (the test above,
    // when both takes land in the same millisecond); a marker ahead of the clock would refuse fills.
    const tag = tagKey('erk:', 'burst');
    const takes = await Promise.all(Array.from({ length: 50 }, () => takeTag(admin, tag, 60_000)));
    const numbers = takes.map((t) => t.take);
    expect(new Set(numbers).size).toBe(50);
    expect([...numbers].sort((a, b) => a - b)).toEqual(numbers);
    const [seconds, micros] = await admin.time();
    const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    expect(Number(await admin.get(`${tag}:inv`))).toBeLessThanOrEqual(now);
  });
});

describe('clean-up of a big tag', () => {
  it('forgets the taken members of a tag with more members than one Lua call can unpack', async () => {
    const tag = tagKey('erk:', 'big');
    const members = Array.from({ length: 12_000 }, (_, i) => `erk:c:{k${i}}`);
    for (let i = 0; i < members.length; i += 1000) {
      await addToTag(admin, tag, 600_000, members.slice(i, i + 1000), undefined);
    }
    const taken = await takeTag(admin, tag, 60_000);
    expect(taken.members).toHaveLength(12_000);
    await forgetTaken(admin, tag, taken);
    expect(await admin.exists(`${tag}:taken`)).toBe(0);
  });

  it('invalidating a tag of 50 000 live entries deletes every one, and the process carries on', async () => {
    const tag = tagKey('erk:', 'huge');
    const members = Array.from({ length: 50_000 }, (_, i) => `erk:c:{huge${i}}`);
    for (let i = 0; i < members.length; i += 1000) {
      const slice = members.slice(i, i + 1000);
      const pipeline = admin.pipeline();
      for (const key of slice) pipeline.set(key, 'x', 'PX', 600_000);
      await pipeline.exec();
      await addToTag(admin, tag, 600_000, slice, undefined);
    }
    // createRedis() turns on auto-pipelining, where one UNLINK of 100 000 keys broke the process.
    const cache = createCache({ redis: redis.client(), l1: false, logger: quietLogger() });
    await cache.invalidate({ tags: ['huge'] });
    expect(await admin.dbsize()).toBeLessThan(10);
    expect(await cache.wrap('after', async () => 'alive', { ttl: '1m' })).toBe('alive');
  });

  it('forgets members whose entries expired as the tag is written to, so the tag does not grow with traffic', async () => {
    const tag = tagKey('erk:', 'churn');
    await addToTag(admin, tag, 1000, ['erk:c:{gone}'], undefined);
    // As if that entry expired well over a minute ago (the margin kept for clocks on a Cluster).
    const [seconds] = await admin.time();
    await admin.zadd(`${tag}:exp`, 'XX', Number(seconds) * 1000 - 120_000, 'erk:c:{gone}');
    await addToTag(admin, tag, 1000, ['erk:c:{live}'], undefined);
    expect(await admin.smembers(tag)).toEqual(['erk:c:{live}']);
    expect(await admin.zrange(`${tag}:exp`, '0', '-1')).toEqual(['erk:c:{live}']);
    expect(await admin.pttl(`${tag}:exp`)).toBeGreaterThan(0);
  });

  it('works beside an instance of an earlier version, which only adds to the plain set and takes it whole', async () => {
    const tag = tagKey('erk:', 'mixed');
    await admin.set('erk:c:{old}', 'x', 'PX', 600_000);
    await admin.set('erk:c:{new}', 'x', 'PX', 600_000);
    // What the earlier version's store does: SADD, no expiry score.
    await admin.sadd(tag, 'erk:c:{old}');
    await admin.pexpire(tag, 600_000);
    await addToTag(admin, tag, 600_000, ['erk:c:{new}'], undefined);
    expect(await admin.type(tag)).toBe('set');
    const cache = createCache({ redis: redis.client(), l1: false, logger: quietLogger() });
    await cache.invalidate({ tags: ['mixed'] });
    expect(await admin.exists('erk:c:{old}', 'erk:c:{new}', `${tag}:exp`)).toBe(0);
    // And the earlier version's take (SUNIONSTORE + DEL of the plain set) still finds every member.
    await addToTag(admin, tag, 600_000, ['erk:c:{again}'], undefined);
    await admin.sunionstore(`${tag}:taken`, `${tag}:taken`, tag);
    expect(await admin.smembers(`${tag}:taken`)).toContain('erk:c:{again}');
  });
});

describe('invalidation racing a Redis read in the same process', () => {
  // The lookup and the invalidation are both held in Redis by CLIENT PAUSE, so the read that started
  // first is answered with the old entry after the invalidation already bumped this process' L1.
  const pause = (ms: number) => admin.client('PAUSE', ms, 'ALL');

  it('wrap(): a Redis hit that started before invalidate() does not land in L1 after it', async () => {
    const writer = createCache({ redis: admin, l1: false });
    await writer.wrap('k', async () => 'v1', { ttl: '5m' });
    const reader = createCache({
      redis: redis.client(),
      l1: { max: 10 },
      timeout: '3s',
      logger: quietLogger(),
    });
    await reader.ready();
    await pause(300);
    const racing = reader.wrap('k', async () => 'never', { ttl: '5m' });
    await new Promise((r) => setTimeout(r, 20));
    await reader.invalidate({ keys: ['k'] });
    expect(await racing).toBe('v1');
    expect(await reader.wrap('k', async () => 'v2', { ttl: '5m' })).toBe('v2');
    await reader.close();
  });

  it('cacheResponse: a Redis hit that started before invalidate() does not land in L1 after it', async () => {
    const client = redis.client();
    let version = 1;
    const writer = cacheResponse({ redis: admin, ttl: '5m', l1: false, logger: quietLogger() });
    const reader = cacheResponse({
      redis: client,
      ttl: '5m',
      l1: { max: 10 },
      timeout: '3s',
      logger: quietLogger(),
    });
    await reader.cache.ready();
    const handler: express.RequestHandler = (_req, res) => {
      res.json({ version });
    };
    let entered: () => void = () => {};
    const inReader = new Promise<void>((resolve) => {
      entered = resolve;
    });
    const writerApp = express().get('/p', writer, handler);
    const readerApp = express().get(
      '/p',
      (_req, _res, next) => {
        entered();
        next();
      },
      reader,
      handler,
    );
    await request(writerApp).get('/p');
    await waitForKeys(admin, 'erk:c:*');
    version = 2;
    await pause(300);
    const racing = request(readerApp)
      .get('/p')
      .then((r) => r);
    await inReader;
    await new Promise((r) => setTimeout(r, 20));
    await reader.invalidate({ keys: ['GET /p'] });
    expect((await racing).body.version).toBe(1);
    const after = await request(readerApp).get('/p');
    expect(after.headers['x-cache']).toBe('MISS');
    expect(after.body.version).toBe(2);
    await reader.cache.close();
  });
});
