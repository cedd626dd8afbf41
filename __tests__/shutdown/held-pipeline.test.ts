import type { Server } from 'node:net';
import { closeRedis, createRedis } from '../../lib/connection';
import { idempotency } from '../../lib/idempotency';
import { useRedisServer } from '../helpers/redis';
import { proxyPort, startTcpProxy } from '../helpers/tcp-proxy';

// README: closeRedis sends QUIT "after any calls still in ioredis's auto-pipeline". ioredis holds
// an auto-pipeline back while the previous one on that connection awaits its reply, and writes QUIT
// at once: closeRedis must wait until none is held back, or QUIT overtakes it. A Redis a few ms away.
const redis = useRedisServer();
let proxy: Server;
beforeAll(async () => {
  // Each write takes 50 ms to reach Redis (replies come back at once, so none is lost at its close).
  proxy = await startTcpProxy(redis.server.port, {
    before: () => new Promise((resolve) => setTimeout(resolve, 50)),
  });
});
afterAll(() => new Promise<void>((resolve) => proxy.close(() => resolve())));

it('a command issued just before closeRedis, while an earlier one awaits its reply, still runs', async () => {
  const check = redis.client();
  const client = redis.track(createRedis({ url: `redis://127.0.0.1:${proxyPort(proxy)}`, logger: false }));
  await client.ping();
  const first = client.set('first', '1');
  await new Promise((resolve) => setImmediate(resolve)); // the first is on the wire, its reply 50 ms away
  const written = client.set('issued-before-close', '1').then(
    () => 'ok',
    (e: Error) => e.message,
  );
  await closeRedis(client, { timeoutMs: 1000 });
  await first.catch(() => {});
  expect({ reply: await written, value: await check.get('issued-before-close') }).toEqual({
    reply: 'ok',
    value: '1',
  });
});

it('a kit call started just before closeRedis (idempotency forget()), after a call of the app, runs', async () => {
  const client = redis.track(createRedis({ url: `redis://127.0.0.1:${proxyPort(proxy)}`, logger: false }));
  const idem = idempotency({ redis: client });
  await client.ping();
  void client.set('app-write', '1');
  await new Promise((resolve) => setImmediate(resolve));
  const forgot = idem.forget({ key: 'k1', route: '/orders', scope: 'u1' }).then(
    (v) => `resolved ${v}`,
    (e: Error) => `rejected: ${e.message}`,
  );
  await closeRedis(client, { timeoutMs: 1000 });
  expect(await forgot).toBe('resolved false');
});
