import express from 'express';
import { cacheResponse } from '../../lib/cache';
import { captureEvents } from '../helpers/events';
import { useRedisServer } from '../helpers/redis';
import { listen, quietLogger, sleep } from './helpers';

const redis = useRedisServer();

// A lookup's result is checked against the invalidations heard since it began: only one that
// reaches its key or tags sends the requests that waited on it to look up for themselves.
it('coalesces concurrent misses of one key in-process while unrelated tags are invalidated', async () => {
  await redis.plain().flushall();
  const mw = cacheResponse({ redis: redis.client(), ttl: '1m', l1: { max: 100 }, logger: quietLogger() });
  await mw.cache.ready();
  let calls = 0;
  const app = express();
  app.get('/hot', mw, async (_req, res) => {
    calls++;
    await sleep(400);
    res.json({ built: calls });
  });
  const server = await listen(app);
  const events = captureEvents('cache');
  try {
    // Elsewhere in the app, writes invalidate unrelated product pages every 10 ms.
    let writing = true;
    const writes = (async () => {
      for (let i = 0; writing; i++) {
        await mw.invalidate({ tags: [`product:${i}`] }).catch(() => {});
        await sleep(10);
      }
    })();
    // 100 requests for /hot arrive over 300 ms, while the first one's origin runs.
    await Promise.all(
      Array.from({ length: 100 }, async (_, i) => {
        await sleep(i * 3);
        await (await fetch(`${server.url}/hot`)).arrayBuffer();
      }),
    );
    writing = false;
    await writes;
    const lockWaits = events.count('lock-wait');
    expect(calls).toBe(1);
    // In-process coalescing: the 99 others join the first request's flight; none polls the lock.
    expect(lockWaits).toBe(0);
  } finally {
    events.stop();
    await server.close();
  }
});
