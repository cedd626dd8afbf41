import express from 'express';
import request from 'supertest';
import { cacheResponse, createCache } from '../../lib/cache';
import { eventually, useRedisServer } from '../helpers/redis';
import { quietLogger } from './helpers';

const redis = useRedisServer();
beforeEach(() => redis.plain().flushall());

/** A promise the test resolves, standing for an origin still at work. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

describe('L1 and invalidations heard while a value was being read or made', () => {
  it.each([
    ['a key of something else', 1, { keys: ['other'] }],
    ['a tag of something else', 1, { tags: ['other-tag'] }],
    ['its own tag', 0, { tags: ['mine-tag'] }],
  ])(
    'cache.wrap: a value made while %s was invalidated: %d entries in L1 after',
    async (_what, kept, target) => {
      const cache = createCache({ redis: redis.client(), l1: { max: 10 }, logger: quietLogger() });
      await cache.ready();
      const origin = gate();
      const making = cache.wrap(
        'mine',
        async () => {
          await origin.opened;
          return 'fresh';
        },
        { ttl: '5m', tags: ['mine-tag'] },
      );
      await new Promise((resolve) => setTimeout(resolve, 20));
      await cache.invalidate(target);
      origin.open();
      expect(await making).toBe('fresh');
      expect(cache.l1!.size).toBe(kept);
      await cache.close();
    },
  );

  it('cacheResponse: a page filled while another page was invalidated is served from L1 next', async () => {
    const pages = cacheResponse({
      redis: redis.client(),
      ttl: '5m',
      l1: { max: 10 },
      tags: (req) => [req.path],
      logger: quietLogger(),
    });
    await pages.cache.ready();
    const origin = gate();
    let calls = 0;
    const app = express().get('/p/:id', pages, async (req, res) => {
      calls++;
      if (req.params.id === 'slow') await origin.opened;
      res.json({ id: req.params.id });
    });
    const slow = request(app)
      .get('/p/slow')
      .then((r) => r);
    await new Promise((resolve) => setTimeout(resolve, 30));
    await pages.invalidate({ tags: ['/p/other'] });
    origin.open();
    expect((await slow).headers['x-cache']).toBe('MISS');
    // Put there by the fill itself, once stored (a Redis hit would put it there too).
    await eventually(() => pages.cache.l1!.size === 1, 'the fill in L1', 2000);
    const again = await request(app).get('/p/slow');
    expect([again.headers['x-cache'], again.body, calls]).toEqual(['HIT', { id: 'slow' }, 1]);
    await pages.cache.close();
  });
});

describe('L1 after close()', () => {
  it('a closed cache no longer answers from L1, which would not hear invalidations any more', async () => {
    let version = 1;
    const make = () => {
      const pages = cacheResponse({
        redis: redis.client(),
        ttl: '5m',
        l1: { max: 10 },
        tags: () => ['p'],
        logger: quietLogger(),
      });
      return { pages, app: express().get('/p', pages, (_req, res) => res.json({ version })) };
    };
    const closing = make();
    const other = make();
    await Promise.all([closing.pages.cache.ready(), other.pages.cache.ready()]);
    await request(closing.app).get('/p').expect(200);
    await eventually(() => closing.pages.cache.l1!.size === 1, 'the page in L1', 2000);
    await closing.pages.cache.close();
    version = 2;
    await other.pages.invalidate({ tags: ['p'] });
    // A request still in flight while the app shuts down.
    expect((await request(closing.app).get('/p')).body).toEqual({ version: 2 });
    await other.pages.cache.close();
  });

  it("stays off when another cache's subscription on the same client lands after it closed", async () => {
    const client = redis.client();
    const closing = createCache({ redis: client, l1: { max: 10 }, logger: quietLogger() });
    const other = createCache({ redis: client, l1: { max: 10 }, logger: quietLogger() });
    await closing.close(); // before its subscription landed
    await other.ready();
    let version = 1;
    expect(await closing.wrap('k', async () => `v${version}`, { ttl: '5m' })).toBe('v1');
    version = 2;
    await other.invalidate({ keys: ['k'] });
    expect(await closing.wrap('k', async () => `v${version}`, { ttl: '5m' })).toBe('v2');
    expect(closing.l1!.size).toBe(0);
    await other.close();
  });
});
