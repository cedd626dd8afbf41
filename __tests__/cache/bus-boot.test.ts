import { createCache } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { closeRedis, createRedis } from '../../lib/connection';
import { freePort, type RedisServerHandle, startRedisServer } from '../../lib/testing';
import { eventually } from '../helpers/redis';

// Containers often start together: an app instance may create its caches before Redis answers. Its
// L1 must not then stay deaf to other instances' invalidations for the life of the process.

describe('the L1 invalidation bus when Redis is down as the app starts', () => {
  let server: RedisServerHandle | undefined;
  const clients: RedisClient[] = [];
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => closeRedis(c, { timeoutMs: 300 })));
    await server?.stop();
    server = undefined;
  });

  it('keeps the L1 off while it cannot subscribe, and hears invalidations once Redis is up (every cache on the client)', async () => {
    const port = await freePort();
    const url = `redis://127.0.0.1:${port}`;
    const warnings: string[] = [];
    const logger = { warn: (_details: unknown, message: string) => warnings.push(message) };
    const a = createRedis({ url, maxReconnectDelay: 200 });
    a.on('error', () => {});
    clients.push(a);
    // Two caches on one client share its one subscription (two routes of one app).
    const first = createCache({ redis: a, l1: { max: 100 }, logger });
    const second = createCache({ redis: a, l1: { max: 100 }, logger });
    let firstReady = false;
    void first.ready().then(() => {
      firstReady = true;
    });
    await eventually(() => warnings.length > 0, 'the warning that the subscription failed');
    expect(warnings[0]).toMatch(/L1 is off until it can/);
    expect(firstReady).toBe(false);

    server = await startRedisServer({ port });
    await Promise.all([first.ready(), second.ready()]);
    const b = createRedis({ url });
    clients.push(b);
    const other = createCache({ redis: b, l1: false });
    for (const [name, cache] of [
      ['first', first],
      ['second', second],
    ] as const) {
      let version = 1;
      const read = () => cache.wrap(`product:${name}`, async () => `v${version}`, { ttl: '5m' });
      expect(await read()).toBe('v1');
      expect(await read()).toBe('v1'); // from L1 or Redis, the entry is there
      version = 2;
      await other.invalidate({ keys: [`product:${name}`] });
      await eventually(async () => (await read()) === 'v2', `${name} cache hears the invalidation`);
    }
  });

  it('a cache created after the subscription already failed keeps its L1 off too (a user without channel permission)', async () => {
    server = await startRedisServer();
    const admin = createRedis({ url: server.url, logger: false });
    clients.push(admin);
    // Redis 7: a user made by ACL SETUSER may use every key but no pub/sub channel.
    await admin.call('ACL', 'SETUSER', 'app', 'on', '>pw', '~*', '+@all');
    const web = createRedis({ url: `redis://app:pw@127.0.0.1:${server.port}`, logger: false });
    clients.push(web);
    const warnings: string[] = [];
    const logger = { warn: (_details: unknown, message: string) => warnings.push(message) };
    createCache({ redis: web, l1: { max: 100 }, logger });
    await eventually(() => warnings.length === 1, 'the first cache to warn');
    const late = createCache({ redis: web, l1: { max: 100 }, logger });
    const other = createCache({ redis: admin, l1: false });
    let version = 1;
    const read = () => late.wrap('product:late', async () => `v${version}`, { ttl: '5m' });
    expect(await read()).toBe('v1');
    version = 2;
    await other.invalidate({ keys: ['product:late'] });
    expect(await read()).toBe('v2');
    expect(warnings).toHaveLength(2); // each cache says its L1 is off
  });

  it("says it is the kit's own pub/sub connection that Redis refuses while the app's connection works (maxclients)", async () => {
    server = await startRedisServer({ args: ['--maxclients', '1'] });
    const web = createRedis({ url: server.url, logger: false });
    clients.push(web);
    await web.ping();
    const failures: unknown[] = [];
    const logger = { warn: (details: { err?: unknown }) => failures.push(details.err) };
    createCache({ redis: web, l1: { max: 100 }, logger });
    await eventually(() => failures.length === 1, 'the warning that the subscription failed', 15_000);
    // ioredis alone says "Reached the max retries per request limit (which is 1)".
    expect(String(failures[0])).toMatch(
      /pub\/sub connection \(one more connection to Redis\) failed: .*maxclients/,
    );
    expect(await web.ping()).toBe('PONG');
  });
});
