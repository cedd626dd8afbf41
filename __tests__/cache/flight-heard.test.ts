import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import express from 'express';
import request from 'supertest';
import { cacheResponse, createCache } from '../../lib/cache';
import { createRedis } from '../../lib/connection';
import { quietLogger, sleep, waitForKeys } from '../cache/helpers';
import { useRedisServer } from '../helpers/redis';

// Requests that come after this instance heard an invalidation do not join a lookup that started
// before it. A proxy whose first connection (the app's own client) delivers Redis's replies `delayMs` late (a
// slow link, or replies queued behind a large one); later connections (the kit's pub/sub) are direct.
const redis = useRedisServer();
const proxies: Server[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(proxies.splice(0).map((p) => new Promise((r) => p.close(r))));
});
async function slowFirstConnection(delayMs: number): Promise<number> {
  let count = 0;
  const server = createServer((client) => {
    const index = ++count;
    const up = connect(redis.server.port, '127.0.0.1');
    sockets.push(client, up);
    for (const s of [client, up]) s.on('error', () => {});
    client.on('data', (c) => up.write(c));
    up.on('data', (c) => {
      if (index === 1) setTimeout(() => client.writable && client.write(c), delayMs);
      else client.write(c);
    });
    up.on('close', () => client.destroy());
    client.on('close', () => up.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  proxies.push(server);
  return (server.address() as AddressInfo).port;
}
beforeEach(() => redis.plain().flushall());

it('cache.wrap: a call made after this instance heard an invalidation does not get the value it invalidated', async () => {
  const other = createCache({ redis: redis.client(), l1: false, logger: quietLogger() });
  await other.wrap('k', async () => 'v1', { ttl: '5m', tags: ['t'] });
  const port = await slowFirstConnection(300);
  const client = redis.track(
    createRedis({ url: `redis://127.0.0.1:${port}`, logger: false, commandTimeout: 5000 }),
  );
  const cache = createCache({ redis: client, l1: { max: 10 }, timeout: '2s', logger: quietLogger() });
  await cache.ready();
  await client.ping();
  const gen0 = cache.heard;
  const early = cache.wrap('k', async () => 'never', { ttl: '5m', tags: ['t'] });
  await sleep(50);
  await other.invalidate({ tags: ['t'] });
  await sleep(50);
  expect(cache.heard).toBeGreaterThan(gen0); // this instance has heard it
  const mine = cache.wrap('k', async () => 'v2', { ttl: '5m', tags: ['t'] });
  expect(await early).toBe('v1');
  expect(await mine).toBe('v2');
  await cache.close();
  await other.close();
});

it('cacheResponse: a request arriving after this instance heard an invalidation is not answered the invalidated page', async () => {
  let version = 1;
  const handler: express.RequestHandler = (_req, res) => {
    res.json({ version });
  };
  const writer = cacheResponse({
    redis: redis.client(),
    ttl: '5m',
    l1: false,
    tags: () => ['p'],
    logger: quietLogger(),
  });
  await request(express().get('/p', writer, handler)).get('/p');
  await waitForKeys(redis.plain(), 'erk:c:*');
  const port = await slowFirstConnection(300);
  const client = redis.track(
    createRedis({ url: `redis://127.0.0.1:${port}`, logger: false, commandTimeout: 5000 }),
  );
  const reader = cacheResponse({
    redis: client,
    ttl: '5m',
    l1: { max: 10 },
    timeout: '2s',
    tags: () => ['p'],
    logger: quietLogger(),
  });
  await reader.cache.ready();
  await client.ping();
  const app = express().get('/p', reader, handler);
  const gen0 = reader.cache.heard;
  const early = request(app)
    .get('/p')
    .then((r) => r);
  await sleep(50);
  version = 2;
  await writer.invalidate({ tags: ['p'] });
  await sleep(50);
  expect(reader.cache.heard).toBeGreaterThan(gen0);
  const mine = await request(app).get('/p');
  expect((await early).body).toEqual({ version: 1 });
  expect([mine.headers['x-cache'], mine.body]).toEqual(['MISS', { version: 2 }]);
});
