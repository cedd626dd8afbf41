import express from 'express';
import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { captureEvents } from '../helpers/events';
import { useRedisServer } from '../helpers/redis';
import { quietLogger } from './helpers';

// Scripts get keys with the client's keyPrefix already on them, and a variant's key comes back from
// the store script that way: the kit must take the prefix off before ioredis adds it again.
const redis = useRedisServer();
let client: RedisClient;
let raw: RedisClient;
beforeAll(() => {
  client = redis.client({ keyPrefix: 'app1:' });
  raw = redis.client();
});
beforeEach(async () => {
  await raw.flushall();
});

function varyApp() {
  const calls = { n: 0 };
  const logger = quietLogger();
  const app = express();
  const cache = cacheResponse({
    redis: client,
    ttl: '1m',
    l1: false,
    logger,
    tags: () => ['greetings'],
  });
  app.use((_req, res, next) => {
    res.vary('Accept-Language');
    next();
  });
  app.get('/greet', cache, (req, res) => {
    calls.n++;
    res.send(req.acceptsLanguages('fr', 'en') === 'fr' ? 'Bonjour' : 'Hello');
  });
  return { app, cache, calls, logger };
}

async function storeBoth(app: express.Express) {
  const events = captureEvents('cache');
  try {
    await request(app).get('/greet').set('Accept-Language', 'fr');
    await events.waitFor('store', 1);
    await request(app).get('/greet').set('Accept-Language', 'en');
    await events.waitFor('store', 2);
  } finally {
    events.stop();
  }
}

describe('cacheResponse on a client with a keyPrefix', () => {
  it('keeps every key, variants and tags included, under the prefix once', async () => {
    const { app } = varyApp();
    await storeBoth(app);
    const fr = await request(app).get('/greet').set('Accept-Language', 'fr');
    const en = await request(app).get('/greet').set('Accept-Language', 'en');
    expect([fr.headers['x-cache'], fr.text]).toEqual(['HIT', 'Bonjour']);
    expect([en.headers['x-cache'], en.text]).toEqual(['HIT', 'Hello']);
    const keys = await raw.keys('*');
    expect(keys.length).toBeGreaterThan(2);
    expect(keys.filter((k) => !k.startsWith('app1:') || k.startsWith('app1:app1:'))).toEqual([]);
  });

  it("a tag invalidation reaches every variant's own key", async () => {
    const { app, cache, calls } = varyApp();
    await storeBoth(app);
    await cache.invalidate({ tags: ['greetings'] });
    const fr = await request(app).get('/greet').set('Accept-Language', 'fr');
    const en = await request(app).get('/greet').set('Accept-Language', 'en');
    expect([fr.headers['x-cache'], fr.text]).toEqual(['MISS', 'Bonjour']);
    expect([en.headers['x-cache'], en.text]).toEqual(['MISS', 'Hello']);
    expect(calls.n).toBe(4);
  });

  it('deletes a corrupt variant under its own key (not under a doubled prefix) and serves a miss', async () => {
    const { app, calls, logger } = varyApp();
    await storeBoth(app);
    const entries = (await raw.keys('app1:erk:c:*')).filter((k) => !/:(lock|ns|tags|inv|v)$/.test(k));
    let poisoned: string | undefined;
    for (const key of entries) {
      const value = await raw.getBuffer(key).catch(() => null);
      if (value?.includes('Bonjour')) poisoned = key;
    }
    expect(poisoned).toBeDefined();
    await raw.set(poisoned!, 'not an entry at all', 'PX', 60_000);
    const fr = await request(app).get('/greet').set('Accept-Language', 'fr');
    expect([fr.status, fr.headers['x-cache'], fr.text]).toEqual([200, 'MISS', 'Bonjour']);
    expect(calls.n).toBe(3);
    expect(logger.warnings.map((w) => w.message).join()).toMatch(/corrupt/);
    expect(await raw.get(poisoned!)).not.toBe('not an entry at all');
    expect(await raw.keys('app1:app1:*')).toEqual([]);
  });
});
