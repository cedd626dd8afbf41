import express from 'express';
import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import { forgetWarnings } from '../../lib/logger';
import { captureEvents } from '../helpers/events';
import { useRedisServer } from '../helpers/redis';
import { quietLogger } from './helpers';

const redis = useRedisServer();

describe('cacheResponse() reached twice by one request (on the app and on the route)', () => {
  it.each(['the same instance', 'two instances on one prefix'])(
    '%s: a miss is answered at once, stored, and served as a hit after, with one warning',
    async (how) => {
      forgetWarnings('ERK_CACHE_TWICE');
      const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => {});
      const events = captureEvents('cache');
      const client = redis.client();
      await client.flushall();
      const options = { redis: client, ttl: '1m', lockTimeout: '1s', logger: quietLogger() } as const;
      const appWide = cacheResponse(options);
      const onRoute = how === 'the same instance' ? appWide : cacheResponse(options);
      const app = express();
      app.use(appWide);
      let runs = 0;
      app.get('/products', onRoute, (_req, res) => {
        runs += 1;
        res.json({ runs });
      });
      try {
        const started = performance.now();
        const miss = await request(app).get('/products').expect(200);
        const tookMs = performance.now() - started;
        await events.waitFor('store', 1);
        const hit = await request(app).get('/products').expect(200);
        const warned = warn.mock.calls.filter(
          ([, o]) => (o as { code?: string })?.code === 'ERK_CACHE_TWICE',
        );
        expect({
          miss: miss.headers['x-cache'],
          hit: hit.headers['x-cache'],
          body: hit.body,
          runs,
          quick: tookMs < 800,
          warned: warned.length,
        }).toEqual({ miss: 'MISS', hit: 'HIT', body: { runs: 1 }, runs: 1, quick: true, warned: 1 });
        expect(events.events.map((e) => e.type)).toContain('reached-twice');
      } finally {
        warn.mockRestore();
        events.stop();
        await appWide.cache.close();
        await onRoute.cache.close();
      }
    },
  );

  it('also through two copies of the kit in one process (its CJS and ESM builds): a miss is answered at once', async () => {
    let other!: typeof import('../../lib/cache');
    jest.isolateModules(() => {
      other = require('../../lib/cache');
    });
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => {});
    const client = redis.client();
    await client.flushall();
    const options = { redis: client, ttl: '1m', lockTimeout: '1s', logger: quietLogger() } as const;
    const appWide = cacheResponse(options);
    const onRoute = other.cacheResponse(options);
    const app = express();
    app.use(appWide);
    app.get('/products', onRoute, (_req, res) => {
      res.json({ ok: true });
    });
    try {
      const started = performance.now();
      const miss = await request(app).get('/products').expect(200);
      expect({ cache: miss.headers['x-cache'], quick: performance.now() - started < 800 }).toEqual({
        cache: 'MISS',
        quick: true,
      });
    } finally {
      warn.mockRestore();
      await appWide.cache.close();
      await onRoute.cache.close();
    }
  });
});
