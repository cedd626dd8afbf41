import { connect } from 'node:net';
import express from 'express';
import { cacheResponse } from '../../lib/cache';
import { closeRedis, createRedis } from '../../lib/connection';
import { eventually, useRedisServer } from '../helpers/redis';
import { proxyPort, startTcpProxy } from '../helpers/tcp-proxy';
import { listen, quietLogger, sleep } from './helpers';

// A client that hangs up while the kit's lookup is still on its way to Redis: the response's 'close'
// has come and gone by the time the fill starts, and must not leave the fill open for good.
const redis = useRedisServer();
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

/** Sends `head` and hangs up `afterMs` later, before the kit's Redis call has answered. */
function hangUp(port: number, head: string, afterMs = 5): Promise<void> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(head);
      setTimeout(() => {
        socket.destroy();
        resolve();
      }, afterMs);
    });
    socket.on('error', () => resolve());
  });
}

it('a miss whose client hung up during the lookup lets go of its fill lock: the next request fills at once', async () => {
  // Replies take 50 ms: the client is gone before the lookup (which takes the fill lock) answers.
  const proxy = await startTcpProxy(redis.server.port, { delayMs: 50 });
  const client = createRedis({ url: `redis://127.0.0.1:${proxyPort(proxy)}`, logger: false });
  cleanups.push(async () => {
    await closeRedis(client, { timeoutMs: 100 });
    proxy.close();
  });
  await client.ping();
  let runs = 0;
  const app = express();
  app.get(
    '/x',
    cacheResponse({ redis: client, ttl: '1m', lockTimeout: '1s', logger: quietLogger() }),
    (_req, res) => {
      runs += 1;
      res.json({ runs });
    },
  );
  const server = await listen(app);
  cleanups.push(server.close);
  const port = Number(new URL(server.url).port);
  await hangUp(port, 'GET /x HTTP/1.1\r\nHost: x\r\n\r\n');
  await eventually(() => runs === 1, 'the route to run for the request whose client left');
  const admin = redis.plain();
  // Before: the lock was renewed for as long as the process lived.
  await eventually(async () => (await admin.keys('erk:*:lock')).length === 0, 'the fill lock to go', 1500);
  await sleep(1200); // past lockTimeout: a lock still renewed would show by now
  expect(await admin.keys('erk:*:lock')).toEqual([]);
  const started = performance.now();
  const res = await fetch(`${server.url}/x`);
  expect(await res.json()).toEqual({ runs: 2 });
  expect(res.headers.get('x-cache')).toBe('MISS');
  // Not 3 × lockTimeout (3 s) behind the first request's flight.
  expect(performance.now() - started).toBeLessThan(1500);
});
