import express from 'express';
import request from 'supertest';
import { cacheResponse, createCache } from '../../lib/cache';
import { closeRedis, createRedis } from '../../lib/connection';
import { useRedisServer } from '../helpers/redis';
import { proxyPort, startTcpProxy } from '../helpers/tcp-proxy';

// A store adds the entry's key to its tag sets, then writes the entry: the entry's TTL counts from
// its own write. When Redis stalls between the two (CLIENT PAUSE here), the store times out in the
// app but lands after the pause, and the tag sets must still outlive it, or an invalidation by tag
// deletes nothing while the old entry is served.

const redis = useRedisServer();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('a cache entry whose write lands late (Redis stalled between the tag and the entry)', () => {
  it('is still reached by its tag: invalidate({ tags }) deletes it, the next GET is a MISS', async () => {
    const admin = redis.plain();
    // Redis stalls right between the tag write and the entry's: once armed, the first command that
    // carries an entry (its value begins with the magic `ERK1`) waits for a CLIENT PAUSE of writes.
    let armed = false;
    const proxy = await startTcpProxy(redis.server.port, {
      before: (chunk) => {
        if (!armed || !chunk.includes('ERK1')) return undefined;
        armed = false;
        return admin.call('CLIENT', 'PAUSE', '1200', 'WRITE').then(() => {});
      },
    });
    const client = createRedis({ url: `redis://127.0.0.1:${proxyPort(proxy)}`, logger: false });
    try {
      const cache = createCache({ redis: client, l1: false, jitter: 0, timeout: 150 });
      const products = cacheResponse({ cache, ttl: 2000, tags: () => ['product:1'] });
      let version = 1;
      const app = express();
      app.get('/p/1', products, (_req, res) => {
        res.json({ price: version });
      });
      await request(app).get('/p/0'); // loads the scripts
      await sleep(50);
      await admin.flushall();

      armed = true;
      const first = await request(app).get('/p/1');
      expect(first.body).toEqual({ price: 1 });
      // The store timed out (store-error) and lands once the 1.2 s pause ends.
      await sleep(1400);
      const tagTtl = await admin.pttl('erk:t:{product:1}');
      const entryKey = (await admin.keys('erk:c:{*')).find((k) => /^erk:c:\{[^}]*\}$/.test(k))!;
      const entryTtl = await admin.pttl(entryKey);

      // What it costs: the price changes, the app invalidates the tag, and the old price is served.
      await sleep(Math.max(0, entryTtl - 300)); // the entry still lives; its tag set (set 1.2 s earlier) has expired
      version = 2;
      await products.invalidate({ tags: ['product:1'] });
      const after = await request(app).get('/p/1');
      // The README's promises: the tag lives at least as long as its member, and an entry in Redis is
      // always one its tags reach, so the invalidated price is not served again.
      expect({
        tagLivesAsLongAsEntry: tagTtl >= entryTtl,
        afterInvalidate: [after.headers['x-cache'], after.body],
      }).toEqual({
        tagLivesAsLongAsEntry: true,
        afterInvalidate: ['MISS', { price: 2 }],
      });
    } finally {
      await closeRedis(client, { timeoutMs: 200 });
      await new Promise((resolve) => proxy.close(resolve));
    }
  }, 20_000);
});
