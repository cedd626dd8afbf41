import type Redis from 'ioredis';
import { createCache } from '../../lib/cache';
import { valueKey } from '../../lib/cache/key';
import { eventually, useRedisServer } from '../helpers/redis';
import { quietLogger } from './helpers';

// L1 starts over when the client reconnects (invalidations sent meanwhile were missed), but not when
// it connects for the first time: there was nothing to miss yet.

const redis = useRedisServer();
let admin: Redis;
beforeAll(() => {
  admin = redis.plain();
});
beforeEach(async () => {
  await admin.flushall();
});

describe('cache L1 and the client connection', () => {
  it('keeps in L1 the value of a call made before the client had connected', async () => {
    const client = redis.client();
    const cache = createCache({ redis: client, l1: { max: 10 }, logger: quietLogger() });
    try {
      expect(client.status).not.toBe('ready');
      expect(await cache.wrap('k', () => 'first', { ttl: '1m' })).toBe('first');
      expect(client.status).toBe('ready');
      // Gone from Redis: only L1 can still answer it.
      expect(await admin.del(valueKey('erk:', 'k'))).toBe(1);
      expect(await cache.wrap('k', () => 'second', { ttl: '1m' })).toBe('first');
    } finally {
      await cache.close();
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
