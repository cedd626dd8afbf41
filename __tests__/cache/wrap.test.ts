import { createCache } from '../../lib/cache';
import { valueKey } from '../../lib/cache/key';
import type { RedisClient } from '../../lib/client';
import { captureEvents } from '../helpers/events';
import { useFlushedClient, useRedisServer } from '../helpers/redis';
import { quietLogger, sleep } from './helpers';

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

describe('cache.wrap', () => {
  it('caches a JSON value in Redis and returns copies, running fn once', async () => {
    const cache = createCache({ redis: client, l1: false });
    let calls = 0;
    const build = () =>
      cache.wrap('report:2025', async () => ({ calls: ++calls, at: [1, 2] }), { ttl: '1m' });
    const first = await build();
    const second = await build();
    expect(second).toEqual({ calls: 1, at: [1, 2] });
    expect(second).not.toBe(first);
    expect(calls).toBe(1);
    expect(await client.pttl(valueKey('erk:', 'report:2025'))).toBeGreaterThan(50_000);
  });

  it('does not cache null or undefined unless cacheNullFor is set', async () => {
    const cache = createCache({ redis: client, l1: { max: 10 } });
    let calls = 0;
    const lookup = (key: string, value: null | undefined, cacheNullFor?: string) =>
      cache.wrap(
        key,
        async () => {
          calls++;
          return value;
        },
        { ttl: '1m', cacheNullFor },
      );
    expect(await lookup('missing', null)).toBeNull();
    expect(await lookup('missing', null)).toBeNull();
    expect(calls).toBe(2);
    calls = 0;
    expect(await lookup('negative', null, '30s')).toBeNull();
    expect(await lookup('negative', null, '30s')).toBeNull();
    expect(await lookup('undef', undefined, '30s')).toBeUndefined();
    expect(await lookup('undef', undefined, '30s')).toBeUndefined();
    expect(calls).toBe(2);
    const ttl = await client.pttl(valueKey('erk:', 'negative'));
    expect(ttl).toBeGreaterThan(20_000);
    expect(ttl).toBeLessThanOrEqual(33_000);
  });

  it('runs fn once for concurrent callers in one process and across two instances', async () => {
    const other = redis.client();
    const a = createCache({ redis: client, l1: { max: 10 } });
    const b = createCache({ redis: other, l1: { max: 10 } });
    let calls = 0;
    const fn = async () => {
      calls++;
      await sleep(200);
      return { built: calls };
    };
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => (i % 2 ? a : b).wrap('shared', fn, { ttl: '1m' })),
    );
    expect(calls).toBe(1);
    for (const r of results) expect(r).toEqual({ built: 1 });
  });

  it('never caches errors, and serves a stale value on error within staleIfError', async () => {
    const cache = createCache({ redis: client, l1: false, jitter: 0 });
    let fail = false;
    const fn = async () => {
      if (fail) throw new Error('boom');
      return 'good';
    };
    await expect(
      cache.wrap('e', async () => Promise.reject(new Error('first')), { ttl: 100 }),
    ).rejects.toThrow('first');
    expect(await cache.wrap('e', fn, { ttl: 100, staleIfError: '1m' })).toBe('good');
    await sleep(150);
    fail = true;
    expect(await cache.wrap('e', fn, { ttl: 100, staleIfError: '1m' })).toBe('good');
    await expect(cache.wrap('e2', fn, { ttl: 100 })).rejects.toThrow('boom');
  });

  it('returns the stale value and refreshes once in the background within staleWhileRevalidate', async () => {
    const cache = createCache({ redis: client, l1: { max: 10 }, jitter: 0 });
    let version = 1;
    let calls = 0;
    const fn = async () => {
      calls++;
      await sleep(100);
      return version;
    };
    const opts = { ttl: 500, staleWhileRevalidate: '1m' };
    const events = captureEvents('cache');
    try {
      expect(await cache.wrap('swr', fn, opts)).toBe(1);
      version = 2;
      await sleep(600);
      const stale = await Promise.all(Array.from({ length: 10 }, () => cache.wrap('swr', fn, opts)));
      expect(stale).toEqual(Array(10).fill(1));
      // The store event, not a fixed sleep: once the refreshed entry outlives its own ttl, the next call
      // would rightly start another refresh.
      await events.waitFor('store', 2);
      expect(calls).toBe(2);
      expect(await cache.wrap('swr', fn, opts)).toBe(2);
      await sleep(50);
      expect(calls).toBe(2);
    } finally {
      events.stop();
    }
  });

  it('takes a custom serializer (binary-safe)', async () => {
    const cache = createCache({ redis: client, l1: false });
    const serializer = { serialize: (b: Buffer) => b, deserialize: (raw: Buffer) => Buffer.from(raw) };
    const bytes = Buffer.from([0, 1, 254, 255, 13, 10]);
    await cache.wrap('bin', async () => bytes, { ttl: '1m', serializer });
    const again = await cache.wrap('bin', async () => Buffer.from('other'), { ttl: '1m', serializer });
    expect(Buffer.compare(again, bytes)).toBe(0);
  });

  it("keeps its own copy of a Buffer the serializer passes through: the caller reusing fn's value does not change later hits", async () => {
    const cache = createCache({ redis: client, l1: { max: 10 } });
    const other = createCache({ redis: client, l1: false });
    try {
      const serializer = { serialize: (b: Buffer) => b, deserialize: (raw: Buffer) => Buffer.from(raw) };
      const first = await cache.wrap('bin-own', async () => Buffer.from('original-bytes'), {
        ttl: '1m',
        serializer,
      });
      // The caller scrubs the buffer it was handed (fn's own value) before the write went out.
      first.fill(0x58);
      const fromL1 = await cache.wrap('bin-own', async () => Buffer.from('never'), { ttl: '1m', serializer });
      const fromRedis = await other.wrap('bin-own', async () => Buffer.from('never'), {
        ttl: '1m',
        serializer,
      });
      expect(fromL1.toString()).toBe('original-bytes');
      expect(fromRedis.toString()).toBe('original-bytes');
    } finally {
      await cache.close();
      await other.close();
    }
  });

  it('hands each hit its own bytes when deserialize returns the Buffer it was given', async () => {
    const cache = createCache({ redis: client, l1: { max: 10 } });
    try {
      const serializer = { serialize: (b: Buffer) => b, deserialize: (raw: Buffer) => raw };
      await cache.wrap('bin-identity', async () => Buffer.from('original-bytes'), { ttl: '1m', serializer });
      const hit = await cache.wrap('bin-identity', async () => Buffer.from('never'), {
        ttl: '1m',
        serializer,
      });
      // One caller scrubs what it was handed; the next hit must not see it.
      hit.fill(0x58);
      const next = await cache.wrap('bin-identity', async () => Buffer.from('never'), {
        ttl: '1m',
        serializer,
      });
      expect(next.toString()).toBe('original-bytes');
    } finally {
      await cache.close();
    }
  });

  it('treats a corrupt value as a miss, deletes it and logs it', async () => {
    const logger = quietLogger();
    const cache = createCache({ redis: client, l1: false, logger });
    await client.set(valueKey('erk:', 'bad'), 'ERK1\u0000\u0000\u0000\u00ffxx', 'PX', 60_000);
    expect(await cache.wrap('bad', async () => 'rebuilt', { ttl: '1m' })).toBe('rebuilt');
    expect(logger.warnings).toHaveLength(1);
    expect(await cache.wrap('bad', async () => 'again', { ttl: '1m' })).toBe('rebuilt');
  });

  it('validates its options', async () => {
    const cache = createCache({ redis: client, l1: false });
    await expect(cache.wrap('k', async () => 1, {} as never)).rejects.toThrow(/"ttl"/);
    await expect(cache.wrap('k', async () => 1, { ttl: '1m', cacheNullFor: 'x' })).rejects.toThrow(
      /cacheNullFor/,
    );
    expect(() => createCache({ redis: client, lockTimeout: 1 })).toThrow(/"lockTimeout"/);
    expect(() => createCache({} as never)).toThrow(/"redis"/);
  });
});
