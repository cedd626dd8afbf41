import express from 'express';
import request from 'supertest';
import { cacheResponse, createCache } from '../../lib/cache';
import { entryKey } from '../../lib/cache/key';
import type { RedisClient } from '../../lib/client';
import { useFlushedClient, useRedisServer } from '../helpers/redis';
import { productApp, quietLogger, sleep, startSlowRead } from './helpers';

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

describe('an invalidation racing a fill that runs without the fill lock (after an uncacheable answer, a corrupt entry)', () => {
  it('cacheResponse: a read that started before the write is not stored after invalidate({ keys }) returned', async () => {
    const state = { value: 'v1', onRead: () => {} };
    const products = cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() });
    const app = express();
    // A first-time visitor gets a tracking cookie (middleware in front): that answer is not stored.
    app.use((req, res, next) => {
      if (!req.headers.cookie) res.cookie('visitor', 'new');
      next();
    });
    app.get('/product', products, async (_req, res) => {
      const read = state.value;
      state.onRead();
      await sleep(200);
      res.json({ value: read });
    });
    // A first-time visitor: uncacheable (Set-Cookie) -> no-store marker for up to 2 s.
    const first = await request(app).get('/product');
    expect(first.headers['x-cache']).toBe('MISS');

    // A returning visitor's read starts (within those 2 s) and reads v1 ...
    const read = new Promise<void>((r) => {
      state.onRead = r;
    });
    const slow = request(app)
      .get('/product')
      .set('Cookie', 'visitor=old')
      .then((r) => r);
    await read;
    // ... then the data changes and the key is invalidated, and invalidate() returns.
    state.value = 'v2';
    await products.invalidate({ keys: ['GET /product'] });
    expect((await slow).body).toEqual({ value: 'v1' }); // fine: it started before the write
    await sleep(300); // let its store land

    const next = await request(app).get('/product').set('Cookie', 'visitor=old');
    expect({ xcache: next.headers['x-cache'], body: next.body }).toEqual({
      xcache: 'MISS',
      body: { value: 'v2' },
    });
  });

  it('cache.wrap: a value read before the write is not stored after invalidate({ keys }) returned', async () => {
    const cache = createCache({ redis: client, l1: false, logger: quietLogger() });
    const db: { user: { name: string } | null } = { user: null };
    let onRead = () => {};
    const load = async () => {
      const read = db.user;
      onRead();
      await sleep(200);
      return read;
    };
    // Not found yet: null is not cached (no cacheNullFor) -> no-store marker for up to 2 s.
    expect(await cache.wrap('user:1', load, { ttl: '1m' })).toBeNull();
    db.user = { name: 'old' };
    const read = new Promise<void>((r) => {
      onRead = r;
    });
    const slow = cache.wrap('user:1', load, { ttl: '1m' });
    await read;
    db.user = { name: 'new' };
    await cache.invalidate({ keys: ['user:1'] });
    expect(await slow).toEqual({ name: 'old' });
    await sleep(100);
    expect(await cache.wrap('user:1', load, { ttl: '1m' })).toEqual({ name: 'new' });
  });

  it('cacheResponse: after a corrupt entry, the next fill runs under the lock, so a tag invalidation stops it', async () => {
    const { app, products, state } = productApp(client);
    await client.set(entryKey('erk:', 'GET /product'), 'garbage'); // a truncated/foreign value
    const { answer: slow } = await startSlowRead(app, state);
    state.value = 'v2';
    await products.invalidate({ tags: ['product'] });
    expect((await slow).body).toEqual({ value: 'v1' });
    await sleep(300);
    const next = await request(app).get('/product');
    expect({ xcache: next.headers['x-cache'], body: next.body }).toEqual({
      xcache: 'MISS',
      body: { value: 'v2' },
    });
  });
});
