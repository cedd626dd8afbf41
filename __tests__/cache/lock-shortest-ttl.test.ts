import { createCache, withLock } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { captureEvents } from '../helpers/events';
import { useFlushedClient, useRedisServer } from '../helpers/redis';

// A lock is renewed every third of its lifetime while its owner runs: a renewal late by two thirds
// (a round trip and an event-loop stall) loses it. At the 10 ms once accepted, a live owner lost
// its lock most of the time; the shortest accepted now is 100 ms.

const redis = useRedisServer();
let a: RedisClient;
let b: RedisClient;
useFlushedClient(redis, (c) => {
  a = c;
});
beforeAll(() => {
  b = redis.client();
});

describe('the shortest lock lifetime accepted', () => {
  it('withLock refuses a ttl under 100 ms, naming it; at 100 ms a live owner keeps its lock for 500 ms', async () => {
    await expect(withLock(a, 'short', async () => 'ran', { ttl: 10 })).rejects.toThrow(RangeError);
    await expect(withLock(a, 'short', async () => 'ran', { ttl: 99 })).rejects.toThrow(/option "ttl"/);
    const outcome = await withLock(
      a,
      'held',
      async (signal) => {
        await new Promise((r) => setTimeout(r, 500));
        return signal.aborted ? String((signal.reason as Error).name) : 'held';
      },
      { ttl: 100 },
    );
    expect(outcome).toBe('held');
  });

  it('createCache refuses a lockTimeout under 100 ms; at 100 ms two instances missing together run the origin once', async () => {
    expect(() => createCache({ redis: a, lockTimeout: 10 })).toThrow(RangeError);
    expect(() => createCache({ redis: a, lockTimeout: 10 })).toThrow(/option "lockTimeout"/);
    const one = createCache({ redis: a, l1: false, lockTimeout: 100, jitter: 0 });
    const two = createCache({ redis: b, l1: false, lockTimeout: 100, jitter: 0 });
    const events = captureEvents('cache');
    try {
      let calls = 0;
      const fn = async () => {
        calls++;
        await new Promise((r) => setTimeout(r, 150));
        return 'v';
      };
      const first = one.wrap('k', fn, { ttl: '1m' });
      await new Promise((r) => setTimeout(r, 3));
      await Promise.all([first, two.wrap('k', fn, { ttl: '1m' })]);
      expect({ calls, lockLost: events.count('lock-lost') }).toEqual({ calls: 1, lockLost: 0 });
    } finally {
      events.stop();
      await one.close();
      await two.close();
    }
  });
});
