import request from 'supertest';
import { createCache } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { captureEvents } from '../helpers/events';
import { useFlushedClient, useRedisServer } from '../helpers/redis';
import { productApp, quietLogger, sleep, startSlowRead } from './helpers';

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

describe('a fill that read the data before a write is not stored after that write invalidated it', () => {
  it('tag invalidation during a first fill (nothing cached yet for the tag)', async () => {
    const { app, state } = productApp(client);
    const events = captureEvents('cache');
    try {
      const { answer: slowRead } = await startSlowRead(app, state);
      await request(app).put('/product').expect(200);
      expect((await slowRead).body).toEqual({ value: 'v1' }); // answered: it started before the write
      await events.waitFor('store-dropped', 1);
      const next = await request(app).get('/product');
      expect(next.headers['x-cache']).toBe('MISS');
      expect(next.body).toEqual({ value: 'v2' });
    } finally {
      events.stop();
    }
  });

  it('key invalidation during the refill of an entry', async () => {
    const { app, products, state } = productApp(client);
    await request(app).get('/product');
    await products.invalidate({ keys: ['GET /product'] });
    const events = captureEvents('cache');
    try {
      const { answer: slowRead } = await startSlowRead(app, state);
      state.value = 'v2';
      await products.invalidate({ keys: ['GET /product'] });
      await slowRead;
      await events.waitFor('store-dropped', 1);
      expect((await request(app).get('/product')).body).toEqual({ value: 'v2' });
    } finally {
      events.stop();
    }
  });

  it('cache.wrap: tag invalidation while fn runs', async () => {
    const cache = createCache({ redis: client, l1: false, logger: quietLogger() });
    const events = captureEvents('cache');
    let value = 'v1';
    let onRead = () => {};
    const read = new Promise<void>((resolve) => {
      onRead = resolve;
    });
    const load = async () => {
      const seen = value;
      onRead();
      await sleep(200);
      return seen;
    };
    try {
      const first = cache.wrap('report', load, { ttl: '1m', tags: ['reports'] });
      await read;
      value = 'v2';
      await cache.invalidate({ tags: ['reports'] });
      expect(await first).toBe('v1');
      await events.waitFor('store-dropped', 1);
      expect(await cache.wrap('report', load, { ttl: '1m', tags: ['reports'] })).toBe('v2');
    } finally {
      events.stop();
      await cache.close();
    }
  });
});
