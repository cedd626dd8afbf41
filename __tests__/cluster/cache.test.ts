import express from 'express';
import request from 'supertest';
import { cacheResponse, createCache, withLock } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { eventually, useRedisCluster } from '../helpers/redis';

const redis = useRedisCluster();
const client = (): RedisClient => redis.client();

async function instance(origin: { calls: number; version: number }) {
  const mw = cacheResponse({
    redis: client(),
    ttl: '1m',
    l1: { max: 100 },
    tags: (req) => [`item:${req.params.id}`, 'items'],
  });
  await mw.cache.ready();
  const app = express();
  app.get('/items/:id', mw, (req, res) => {
    origin.calls++;
    res
      .vary('X-Lang')
      .json({ id: req.params.id, lang: req.headers['x-lang'] ?? null, version: origin.version });
  });
  return { app, mw };
}

describe('cache on a Redis Cluster', () => {
  it('stores and serves entries (with Vary variants) across slots, one instance to another', async () => {
    const origin = { calls: 0, version: 1 };
    const a = await instance(origin);
    const b = await instance(origin);
    for (let id = 0; id < 10; id++) {
      await request(a.app).get(`/items/${id}`).set('X-Lang', 'en');
    }
    await eventually(async () => {
      const res = await request(b.app).get('/items/9').set('X-Lang', 'en');
      return res.headers['x-cache'] === 'HIT';
    }, 'entries to reach Redis');
    for (let id = 0; id < 10; id++) {
      const res = await request(b.app).get(`/items/${id}`).set('X-Lang', 'en');
      expect(res.headers['x-cache']).toBe('HIT');
      expect(res.body).toEqual({ id: String(id), lang: 'en', version: 1 });
    }
    const fr = await request(b.app).get('/items/1').set('X-Lang', 'fr');
    expect(fr.headers['x-cache']).toBe('MISS');
    expect(origin.calls).toBe(11);
  });

  it("invalidates a tag whose entries live in other slots, in Redis and in the other instance's L1", async () => {
    const origin = { calls: 0, version: 1 };
    const a = await instance(origin);
    const b = await instance(origin);
    for (let id = 20; id < 30; id++) await request(a.app).get(`/items/${id}`);
    await eventually(
      async () => (await request(b.app).get('/items/29')).headers['x-cache'] === 'HIT',
      'entries',
    );
    for (let id = 20; id < 30; id++) await request(b.app).get(`/items/${id}`);
    origin.version = 2;
    await a.mw.invalidate({ tags: ['items'] });
    // Only the Vary markers (no entries) may stay in b's L1.
    await eventually(() => b.mw.cache.l1!.size <= 10, "b's L1 to drop the entries", 2000);
    for (let id = 20; id < 30; id++) {
      const res = await request(b.app).get(`/items/${id}`);
      expect(res.body.version).toBe(2);
    }
  });

  it('runs wrap() once for concurrent callers on two clients and honours tags', async () => {
    const a = createCache({ redis: client(), l1: { max: 10 } });
    const b = createCache({ redis: client(), l1: { max: 10 } });
    await Promise.all([a.ready(), b.ready()]);
    let calls = 0;
    const fn = async () => {
      calls++;
      await new Promise((r) => setTimeout(r, 200));
      return { calls };
    };
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        (i % 2 ? a : b).wrap('cluster:report', fn, { ttl: '1m', tags: ['reports'] }),
      ),
    );
    expect(calls).toBe(1);
    expect(results.every((r) => r.calls === 1)).toBe(true);
    await b.invalidate({ tags: ['reports'] });
    // a learns it over the bus, within milliseconds.
    await eventually(() => a.l1!.size === 0, "a's L1 to drop the value", 2000);
    expect(await a.wrap('cluster:report', fn, { ttl: '1m', tags: ['reports'] })).toEqual({ calls: 2 });
  });

  it('withLock works on the cluster', async () => {
    const c = client();
    expect(await withLock(c, 'cluster-job', async () => 'ok', { ttl: 1000 })).toBe('ok');
  });
});
