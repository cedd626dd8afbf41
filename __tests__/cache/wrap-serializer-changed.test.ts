import { createCache } from '../../lib/cache';
import { valueKey } from '../../lib/cache/key';
import type { RedisClient } from '../../lib/client';
import { captureEvents } from '../helpers/events';
import { useFlushedClient, useRedisServer } from '../helpers/redis';
import { quietLogger, sleep } from './helpers';

// A deploy adds (or changes) a wrap() call's `serializer`, e.g. to keep Dates. During the rolling
// deploy, and for `ttl` after it, instances read values stored through the other serializer.

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

/** A versioned serializer, as such serializers are written: it refuses what it did not write. */
const tagged = {
  serialize: (value: unknown) => `v2:${JSON.stringify(value)}`,
  deserialize: (raw: Buffer) => {
    const text = raw.toString('utf8');
    if (!text.startsWith('v2:')) throw new Error('not a v2 value');
    return JSON.parse(text.slice(3));
  },
};

/** A stale entry stored through the old serializer (JSON), and two instances on the new one. */
async function staleOldEntry() {
  const old = createCache({ redis: client, l1: false, jitter: 0 });
  await old.wrap('report', async () => 'old', { ttl: 100, staleIfError: '1m' });
  await sleep(150);
  const options = { l1: false as const, jitter: 0, lockTimeout: 100, logger: quietLogger() };
  return {
    key: valueKey('erk:', 'report'),
    slowNew: createCache({ ...options, redis: redis.client() }),
    otherNew: createCache({ ...options, redis: redis.client() }),
  };
}

describe('cache.wrap after its serializer changed', () => {
  it('reads an entry stored through the old serializer as a miss: fn runs once, and its value is stored and served', async () => {
    const old = createCache({ redis: client, l1: false });
    const logger = quietLogger();
    const updated = createCache({ redis: redis.client(), l1: false, logger });
    const events = captureEvents('cache');
    try {
      await old.wrap('report', async () => ({ n: 0 }), { ttl: '1h' });
      let calls = 0;
      const call = () =>
        updated.wrap('report', async () => ({ n: ++calls }), { ttl: '1h', serializer: tagged });
      expect([await call(), await call(), await call()]).toEqual([{ n: 1 }, { n: 1 }, { n: 1 }]);
      expect(calls).toBe(1);
      expect(logger.warnings).toEqual([
        {
          details: { key: valueKey('erk:', 'report'), reason: expect.stringContaining('not a v2 value') },
          message: 'deleted a cache entry the serializer cannot read (served as a miss)',
        },
      ]);
      const corrupt = events.events.filter((e) => e.type === 'corrupt');
      expect(corrupt).toHaveLength(1);
      expect(corrupt[0]).toMatchObject({
        key: valueKey('erk:', 'report'),
        error: { code: 'ERK_CACHE_CORRUPT' },
      });
    } finally {
      events.stop();
    }
  });

  it('an instance still on the old serializer (with an L1) reads the new entry as a miss and stores its own', async () => {
    const old = createCache({ redis: client, l1: { max: 10 }, logger: quietLogger() });
    const updated = createCache({ redis: redis.client(), l1: false, logger: quietLogger() });
    await old.ready();
    await updated.wrap('report', async () => ({ n: 1 }), { ttl: '1h', serializer: tagged });
    let calls = 0;
    const call = () => old.wrap('report', async () => ({ n: 2, call: ++calls }), { ttl: '1h' });
    expect(await call()).toEqual({ n: 2, call: 1 });
    expect(await call()).toEqual({ n: 2, call: 1 });
    // Stored through the old serializer again: another instance on it hits without running fn.
    const another = createCache({ redis: redis.client(), l1: false });
    expect(await another.wrap('report', async () => ({ n: 3 }), { ttl: '1h' })).toEqual({ n: 2, call: 1 });
  });

  it('two calls on one key with different serializers in one process: the L1 copy one cannot read is a miss', async () => {
    const cache = createCache({ redis: client, l1: { max: 10 }, logger: quietLogger() });
    await cache.ready();
    expect(await cache.wrap('shared', async () => 'through v2', { ttl: '1h', serializer: tagged })).toBe(
      'through v2',
    );
    expect(await cache.wrap('shared', async () => 'through JSON', { ttl: '1h' })).toBe('through JSON');
    expect(await cache.wrap('shared', async () => 'again', { ttl: '1h' })).toBe('through JSON');
  });

  it('an L1 copy it cannot read is dropped from L1 only: the readable entry another instance stored in Redis is served', async () => {
    const mixed = createCache({ redis: client, l1: { max: 10 }, logger: quietLogger() });
    const updated = createCache({ redis: redis.client(), l1: false, logger: quietLogger() });
    await mixed.ready();
    await mixed.wrap('report', async () => 'through JSON', { ttl: '1h' });
    expect(await updated.wrap('report', async () => 'through v2', { ttl: '1h', serializer: tagged })).toBe(
      'through v2',
    );
    const stored = await client.getBuffer(valueKey('erk:', 'report'));
    let runs = 0;
    expect(await mixed.wrap('report', async () => `run ${++runs}`, { ttl: '1h', serializer: tagged })).toBe(
      'through v2',
    );
    expect(runs).toBe(0);
    expect((await client.getBuffer(valueKey('erk:', 'report')))?.equals(stored!)).toBe(true);
  });

  it("a value its own deserializer refuses (a schema check) is returned uncached, as one it cannot serialize is: never stored, so never dropped as another serializer's", async () => {
    const validating = {
      serialize: (value: { ok: boolean }) => JSON.stringify(value),
      deserialize: (raw: Buffer) => {
        const value = JSON.parse(raw.toString('utf8'));
        if (!value.ok) throw new Error('schema: ok must be true');
        return value;
      },
    };
    const logger = quietLogger();
    const cache = createCache({ redis: client, l1: { max: 10 }, logger });
    await cache.ready();
    const events = captureEvents('cache');
    try {
      let runs = 0;
      const options = { ttl: '1h', serializer: validating };
      const fn = async () => {
        await sleep(20);
        return { ok: false, run: ++runs };
      };
      const together = await Promise.all([1, 2, 3].map(() => cache.wrap('checked', fn, options)));
      expect(together).toEqual([1, 2, 3].map(() => ({ ok: false, run: 1 })));
      for (let i = 2; i <= 4; i++)
        expect(await cache.wrap('checked', fn, options)).toEqual({ ok: false, run: i });
      expect(await client.exists(valueKey('erk:', 'checked'))).toBe(0);
      expect(events.count('corrupt')).toBe(0);
      expect(events.count('uncacheable')).toBe(4);
      expect(new Set(logger.warnings.map((w) => w.message))).toEqual(
        new Set(['cache.wrap could not serialize the value; returned it uncached']),
      );
      expect(String((logger.warnings[0]!.details as { err: Error }).err.message)).toContain(
        'cannot read back what it wrote: schema: ok must be true',
      );
    } finally {
      events.stop();
    }
  });

  it("a stale entry it cannot read is no stale-if-error fallback: the caller gets fn's own error", async () => {
    const old = createCache({ redis: client, l1: false, jitter: 0 });
    const updated = createCache({ redis: redis.client(), l1: false, jitter: 0, logger: quietLogger() });
    await old.wrap('report', async () => 'old', { ttl: 100, staleIfError: '1m' });
    await sleep(150);
    await expect(
      updated.wrap(
        'report',
        async () => {
          throw new Error('origin down');
        },
        { ttl: 100, staleIfError: '1m', serializer: tagged },
      ),
    ).rejects.toThrow('origin down');
  });

  it('a failed fill that let go of its lock (fill-slow) leaves alone the readable entry another instance stored since, though the one it found was unreadable', async () => {
    const { key, slowNew, otherNew } = await staleOldEntry();
    const failing = slowNew.wrap(
      'report',
      async () => {
        await sleep(600);
        throw new Error('origin down');
      },
      { ttl: '1h', staleIfError: '1m', serializer: tagged },
    );
    await sleep(400); // past 3 x lockTimeout: slowNew let go of the lock (fill-slow)
    expect(await otherNew.wrap('report', async () => 'fresh v2', { ttl: '1h', serializer: tagged })).toBe(
      'fresh v2',
    );
    const stored = await client.getBuffer(key);
    expect(stored?.toString()).toContain('v2:"fresh v2"');
    await expect(failing).rejects.toThrow('origin down');
    await sleep(50);
    // The readable entry otherNew stored 200 ms later is still there.
    expect((await client.getBuffer(key))?.toString()).toContain('v2:"fresh v2"');
  });

  it('a failed fill a coalesced caller gave up on (abandon released the lock) leaves alone the readable entry stored since', async () => {
    const { key, slowNew, otherNew } = await staleOldEntry();
    const events = captureEvents('cache');
    const fn = async () => {
      await sleep(600);
      throw new Error('origin down');
    };
    const o = { ttl: '1h', staleIfError: '1m', serializer: tagged };
    // The leader and a caller coalesced behind it; the latter gives up at 3 x lockTimeout (abandon).
    const calls = [slowNew.wrap('report', fn, o), slowNew.wrap('report', fn, o)].map((p) =>
      p.catch((e) => e),
    );
    await sleep(400);
    expect(events.count('fill-slow')).toBe(0); // the lock went through abandon, not the let-go
    expect(await otherNew.wrap('report', async () => 'fresh v2', { ttl: '1h', serializer: tagged })).toBe(
      'fresh v2',
    );
    expect((await client.getBuffer(key))?.toString()).toContain('v2:"fresh v2"');
    await Promise.all(calls);
    await sleep(50);
    events.stop();
    expect((await client.getBuffer(key))?.toString()).toContain('v2:"fresh v2"');
  });

  it('Redis down with a deaf L1: an unreadable L1 copy is reported once, and is no stale-if-error fallback', async () => {
    // Its invalidation channel down (deaf) and Redis failing the lookup (bypass), set by hand.
    const logger = quietLogger();
    const cache = createCache({ redis: client, l1: { max: 10 }, logger, jitter: 0 });
    await cache.ready();
    await cache.wrap('k', async () => 'json', { ttl: '1h', staleIfError: '1m' });
    const l1 = cache.l1!;
    (l1 as unknown as { deaf: boolean }).deaf = true;
    (cache as unknown as { acquire: unknown }).acquire = async () => ({
      kind: 'bypass',
      error: new Error('down'),
    });
    const events = captureEvents('cache');
    try {
      await expect(
        cache.wrap(
          'k',
          async () => {
            throw new Error('origin down');
          },
          { ttl: '1h', staleIfError: '1m', serializer: tagged },
        ),
      ).rejects.toThrow('origin down');
      expect(events.count('corrupt')).toBe(1);
      expect(logger.warnings).toHaveLength(1);
    } finally {
      events.stop();
    }
  });

  it('an entry rewritten through the old serializer as fast as it is dropped is not looked up for ever: fn runs, uncached', async () => {
    const old = createCache({ redis: client, l1: false });
    await old.wrap('report', async () => 'old', { ttl: '1h' });
    const key = valueKey('erk:', 'report');
    const oldBytes = (await client.getBuffer(key))!;
    const updated = createCache({ redis: client, l1: false, logger: quietLogger() });
    // An old instance writing it back before each lookup: sent on the cache's own connection, so it
    // lands after the drop and before the lookup, every time.
    const lookup = updated.acquire.bind(updated);
    let looks = 0;
    updated.acquire = (...args: Parameters<typeof lookup>) => {
      looks++;
      client.set(key, oldBytes, 'PX', 60_000).catch(() => {});
      return lookup(...args);
    };
    expect(await updated.wrap('report', async () => 'new', { ttl: '1h', serializer: tagged })).toBe('new');
    expect(looks).toBe(2);
  });
});
