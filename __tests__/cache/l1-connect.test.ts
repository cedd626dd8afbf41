import Redis from 'ioredis';
import { createCache } from '../../lib/cache';
import { valueKey } from '../../lib/cache/key';
import { eventually, useRedisServer } from '../helpers/redis';
import { quietLogger } from './helpers';

// L1 starts over when the client reconnects (invalidations sent meanwhile were missed), and is off
// until the invalidation channel is first subscribed: one published before would never reach it.

const redis = useRedisServer();
let admin: Redis;
beforeAll(() => {
  admin = redis.plain();
});
beforeEach(async () => {
  await admin.flushall();
});

describe('cache L1 and the client connection', () => {
  it('does not keep in L1 a value read before the invalidation channel was subscribed', async () => {
    const client = redis.client();
    const cache = createCache({ redis: client, l1: { max: 10 }, logger: quietLogger() });
    try {
      expect(client.status).not.toBe('ready');
      expect(await cache.wrap('k', () => 'first', { ttl: '1m' })).toBe('first');
      await cache.ready();
      // Gone from Redis: an L1 copy would still answer it.
      expect(await admin.del(valueKey('erk:', 'k'))).toBe(1);
      expect(await cache.wrap('k', () => 'second', { ttl: '1m' })).toBe('second');
      // Subscribed now: L1 serves.
      expect(await admin.del(valueKey('erk:', 'k'))).toBe(1);
      expect(await cache.wrap('k', () => 'third', { ttl: '1m' })).toBe('second');
    } finally {
      await cache.close();
    }
  });

  it('an instance whose first subscription came late does not serve what was invalidated meanwhile', async () => {
    const other = createCache({ redis: redis.client(), l1: false, logger: quietLogger() });
    await other.wrap('k', async () => 'v1', { ttl: '5m', tags: ['t'] });
    // A plain client (ioredis defaults) connected now; Redis then refuses new connections
    // (maxclients during a deploy's connection storm), so the cache's subscriber waits.
    const client = redis.track(new Redis(redis.server.url));
    client.on('error', () => {});
    await client.ping();
    const connected = Number(/connected_clients:(\d+)/.exec(await admin.info('clients'))![1]);
    await admin.config('SET', 'maxclients', String(connected));
    try {
      const cache = createCache({ redis: client, l1: { max: 10 }, logger: quietLogger() });
      expect(await cache.wrap('k', async () => 'never', { ttl: '5m', tags: ['t'] })).toBe('v1');
      await other.invalidate({ tags: ['t'] });
      await admin.config('SET', 'maxclients', '10000');
      await cache.ready();
      expect(await cache.wrap('k', async () => 'v2', { ttl: '5m', tags: ['t'] })).toBe('v2');
      await cache.close();
    } finally {
      await admin.config('SET', 'maxclients', '10000');
      await other.close();
    }
  });

  it('empties L1 when the client reconnects', async () => {
    const client = redis.client();
    const cache = createCache({ redis: client, l1: { max: 10 }, logger: quietLogger() });
    try {
      await cache.ready();
      await eventually(() => client.status === 'ready', 'the client to connect');
      expect(await cache.wrap('k', () => 'first', { ttl: '1m' })).toBe('first');
      expect(await admin.del(valueKey('erk:', 'k'))).toBe(1);
      expect(await cache.wrap('k', () => 'second', { ttl: '1m' })).toBe('first');
      const reconnected = new Promise((resolve) => client.once('ready', resolve));
      client.disconnect(true);
      await reconnected;
      expect(await cache.wrap('k', () => 'third', { ttl: '1m' })).toBe('third');
    } finally {
      await cache.close();
    }
  });
});
