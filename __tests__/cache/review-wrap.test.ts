import type Redis from 'ioredis';
import { type Cache, createCache } from '../../lib/cache';
import { invalidatedKeyOf, lockKeyOf, noStoreKeyOf, valueKey } from '../../lib/cache/key';
import type { WrapOptions } from '../../lib/cache/types';
import { resolveWrap, toEntry } from '../../lib/cache/wrap-values';
import { captureEvents } from '../helpers/events';
import { eventually, useRedisServer } from '../helpers/redis';
import { quietLogger, sleep } from './helpers';

const redis = useRedisServer();
let admin: Redis;
beforeAll(() => {
  admin = redis.plain();
});
beforeEach(async () => {
  await admin.flushall();
});

describe('cache.wrap with a value its serializer cannot store', () => {
  it('returns the value uncached, warns, and leaves no lock for the next call to wait on', async () => {
    const logger = quietLogger();
    const cache = createCache({ redis: redis.client(), l1: false, lockTimeout: '3s', timeout: '2s', logger });
    const events = captureEvents('cache');
    try {
      const value = await cache.wrap('k', () => ({ id: 1n }), { ttl: '1m' });
      expect(value).toEqual({ id: 1n });
      expect(logger.warnings.map((w) => w.message)).toEqual([
        'cache.wrap could not serialize the value; returned it uncached',
      ]);
      const uncacheable = events.events.filter((e) => e.type === 'uncacheable');
      expect(uncacheable).toMatchObject([{ reason: 'serializer', key: valueKey('erk:', 'k') }]);
      await eventually(
        async () => (await admin.exists(lockKeyOf(valueKey('erk:', 'k')))) === 0,
        'the fill lock to be released',
      );

      const started = Date.now();
      expect(await cache.wrap('k', () => 'fine', { ttl: '1m' })).toBe('fine');
      // Well under lockTimeout (3 s): it did not wait for a lock left behind, however busy the machine.
      expect(Date.now() - started).toBeLessThan(2000);
      expect(await cache.wrap('k', () => 'not called', { ttl: '1m' })).toBe('fine');
    } finally {
      events.stop();
    }
  });

  it('also when a custom serializer returns something that is not a string or Buffer', async () => {
    const cache = createCache({
      redis: redis.client(),
      l1: false,
      lockTimeout: '3s',
      timeout: '2s',
      logger: quietLogger(),
    });
    const serializer = {
      serialize: () => undefined as unknown as string,
      deserialize: (raw: Buffer) => raw.toString(),
    };
    expect(await cache.wrap('k', () => 'x', { ttl: '1m', serializer })).toBe('x');
    const started = Date.now();
    expect(await cache.wrap('k', () => 'y', { ttl: '1m' })).toBe('y');
    // Well under lockTimeout (3 s): it did not wait for a lock left behind, however busy the machine.
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('gives callers coalesced behind it the value too, running fn once', async () => {
    const cache = createCache({ redis: redis.client(), l1: false, logger: quietLogger() });
    let calls = 0;
    const fn = async () => {
      calls++;
      await sleep(30);
      return { id: 7n };
    };
    const results = await Promise.all([1, 2, 3].map(() => cache.wrap('shared', fn, { ttl: '1m' })));
    expect(results).toEqual([{ id: 7n }, { id: 7n }, { id: 7n }]);
    expect(calls).toBe(1);
  });
});

describe('cache.wrap staleIfError when Redis is down', () => {
  it('returns the stale value L1 still holds when fn throws, within the staleIfError window', async () => {
    const client = redis.client();
    const cache = createCache({ redis: client, l1: { max: 10 }, jitter: 0, logger: quietLogger() });
    await cache.ready();
    const options = { ttl: 200, staleIfError: '1m' };
    const noStale = { ttl: 200 };
    expect(await cache.wrap('k', () => 'value', options)).toBe('value');
    expect(await cache.wrap('plain', () => 'value', noStale)).toBe('value');
    await sleep(300);
    const events = captureEvents('cache');
    await redis.server.kill();
    try {
      const failing = () => {
        throw new Error('db down');
      };
      expect(await cache.wrap('k', failing, options)).toBe('value');
      expect(events.events.filter((e) => e.type === 'stale-if-error')).toMatchObject([
        { key: valueKey('erk:', 'k') },
      ]);
      // Without staleIfError, or once fn works again, nothing stale is served.
      await expect(cache.wrap('plain', failing, noStale)).rejects.toThrow('db down');
      expect(await cache.wrap('k', () => 'fresh', options)).toBe('fresh');
    } finally {
      events.stop();
      await redis.server.restart();
      // Every connection back before the file closes them, or a reconnect attempt outlives the test.
      await eventually(() => client.status === 'ready', 'the client to reconnect');
      await eventually(
        async () => Number((await admin.pubsub('NUMSUB', 'erk:cache:bus'))[1]) > 0,
        'the invalidation bus to resubscribe',
      );
      await cache.close();
    }
  });
});

describe('cache.wrap: a caller coalesced behind an fn that never settles', () => {
  it('waits at most 3 × lockTimeout, then runs its own fn', async () => {
    const cache = createCache({ redis: redis.client(), lockTimeout: '100ms', logger: quietLogger() });
    try {
      void cache.wrap('hung', () => new Promise(() => {}), { ttl: '1m' });
      await sleep(20);
      const started = performance.now();
      const value = await Promise.race([
        cache.wrap('hung', async () => 'mine', { ttl: '1m' }),
        sleep(2000).then(() => 'still waiting'),
      ]);
      expect(value).toBe('mine');
      expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    } finally {
      await cache.close();
    }
  });

  it('lets the next call open a flight of its own, which fills the cache: later calls are hits', async () => {
    const cache = await abandonedFlight('hung-then', '100ms');
    try {
      const values: string[] = [];
      for (const v of ['b', 'c', 'd'])
        values.push(await cache.wrap('hung-then', async () => v, { ttl: '1m' }));
      expect(values).toEqual(['b', 'b', 'b']);
    } finally {
      await cache.close();
    }
  });
});

/** A cache with a flight on `key` that never settles, which one caller has already given up on. */
async function abandonedFlight(key: string, lockTimeout: string) {
  const cache = createCache({ redis: redis.client(), l1: false, lockTimeout, logger: quietLogger() });
  void cache.wrap(key, () => new Promise(() => {}), { ttl: '1m' });
  await sleep(20);
  expect(await cache.wrap(key, async () => 'gave up', { ttl: '1m' })).toBe('gave up');
  return cache;
}

describe('cache.wrap after a caller gave up on a hung flight (whose fill held the Redis lock)', () => {
  it('the next flight takes the lock at once and coalesces its callers: a burst of 4 runs fn once', async () => {
    const cache = await abandonedFlight('k1', '200ms');
    try {
      let calls = 0;
      const fn = async () => {
        calls++;
        await sleep(50);
        return 'v';
      };
      const values = await Promise.all([1, 2, 3, 4].map(() => cache.wrap('k1', fn, { ttl: '1m' })));
      expect({ calls, values }).toEqual({ calls: 1, values: ['v', 'v', 'v', 'v'] });
    } finally {
      await cache.close();
    }
  });
});

describe('cache.wrap: an abandoned fill stores nothing (its value may be older than what a later flight stored)', () => {
  it.each([
    ['one that held the fill lock, settling late', 'locked'],
    ['one that ran without the lock (a no-store marker made it run unlocked)', 'unlocked'],
    ["one given up on while its lookup still polled another process's lock", 'polled'],
  ])('%s', async (_title, key) => {
    const cache = createCache({
      redis: redis.client(),
      l1: false,
      lockTimeout: '100ms',
      logger: quietLogger(),
    });
    try {
      if (key === 'unlocked') expect(await cache.wrap(key, async () => null, { ttl: '1m' })).toBeNull();
      // Another process holds the fill lock (a slow fill there): the leader below polls in its lookup,
      // and the coalesced caller gives up before the lookup does.
      if (key === 'polled') await redis.plain().set(lockKeyOf(valueKey('erk:', key)), 'foreign', 'PX', 5000);
      let release!: (v: string) => void;
      const gate = new Promise<string>((r) => {
        release = r;
      });
      const leader = cache.wrap(key, () => gate, { ttl: '1m' });
      await sleep(20);
      expect(await cache.wrap(key, async () => 'gave up', { ttl: '1m' })).toBe('gave up');
      expect(await cache.wrap(key, async () => 'new', { ttl: '1m' })).toBe('new');
      release('old');
      expect(await leader).toBe('old');
      await sleep(50);
      expect(await cache.wrap(key, async () => 'x', { ttl: '1m' })).toBe('new');
    } finally {
      await cache.close();
    }
  });
});

describe('cache.wrap with the longest lockTimeout (2^31 - 1 ms)', () => {
  it('still runs fn once for concurrent callers: their wait is capped at what a timer can hold', async () => {
    const cache = createCache({
      redis: redis.client(),
      l1: false,
      lockTimeout: 2 ** 31 - 1,
      logger: quietLogger(),
    });
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => {});
    try {
      let calls = 0;
      const fn = async () => {
        calls++;
        await sleep(200);
        return 'v';
      };
      await Promise.all([cache.wrap('long', fn, { ttl: '1m' }), cache.wrap('long', fn, { ttl: '1m' })]);
      expect({
        calls,
        overflow: warn.mock.calls.some(([, o]) => String(o).includes('TimeoutOverflow')),
      }).toEqual({
        calls: 1,
        overflow: false,
      });
    } finally {
      warn.mockRestore();
      await cache.close();
    }
  });
});

describe('cache.wrap: a background refresh whose fn takes longer than 3 × lockTimeout', () => {
  const options = { ttl: 300, staleWhileRevalidate: '1m' };
  /** Two instances (l1 off unless asked, as two processes), and an entry of `key` already stale. */
  async function staleEntry(key: string, l1: false | { max: number } = false, first = options) {
    const make = (withL1: false | { max: number }) =>
      createCache({
        redis: redis.client(),
        l1: withL1,
        jitter: 0,
        lockTimeout: '100ms',
        logger: quietLogger(),
      });
    const [a, b] = [make(l1), make(false)];
    await a.ready(); // L1 keeps what it is given once the instance hears invalidations
    expect(await a.wrap(key, async () => 'first', first)).toBe('first');
    await sleep(350);
    return { a, b };
  }

  /** An origin that is down: whatever an instance calling it reads is what another stored. */
  const failing = async (): Promise<string> => {
    throw new Error('origin down');
  };

  /** Starts a's background refresh of the stale `key`, with an fn that settles when told (returned). */
  async function slowRefresh(a: Cache, key: string, opts: WrapOptions<string> = options) {
    let finish!: (v: string) => void;
    expect(await a.wrap(key, () => new Promise<string>((r) => (finish = r)), opts)).toBe('first');
    return (v: string) => finish(v);
  }

  /** Waits for a's refresh of `key` to take the fill lock, then for it to let go of it. */
  async function letGo(key: string) {
    const lock = lockKeyOf(valueKey('erk:', key));
    await eventually(async () => (await admin.exists(lock)) === 1, 'the refresh to take the lock');
    await eventually(async () => (await admin.exists(lock)) === 0, 'the slow refresh to let go of the lock');
  }

  it('never settling: lets go of the fill lock, so another instance refreshes the entry', async () => {
    const { a, b } = await staleEntry('hung-refresh');
    const events = captureEvents('cache');
    try {
      let runs = 0;
      const hung = () => {
        runs++;
        return new Promise<string>(() => {});
      };
      expect(await a.wrap('hung-refresh', hung, options)).toBe('first');
      const lock = lockKeyOf(valueKey('erk:', 'hung-refresh'));
      await eventually(async () => (await admin.exists(lock)) === 1, 'the refresh to take the lock');
      await eventually(
        async () => (await admin.exists(lock)) === 0,
        'the hung refresh to let go of the lock',
      );
      expect(events.events.filter((e) => e.type === 'refresh-slow')).toMatchObject([
        { key: valueKey('erk:', 'hung-refresh') },
      ]);
      // This instance does not pile another run on the hung one.
      expect(await a.wrap('hung-refresh', hung, options)).toBe('first');
      expect(runs).toBe(1);
      expect(await b.wrap('hung-refresh', async () => 'second', options)).toBe('first');
      await eventually(
        async () => (await b.wrap('hung-refresh', async () => 'third', options)) === 'second',
        "the other instance's refresh to land",
      );
    } finally {
      events.stop();
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('settling late: still stores its value, without the lock', async () => {
    const { a, b } = await staleEntry('slow-refresh');
    try {
      const finish = await slowRefresh(a, 'slow-refresh');
      const lock = lockKeyOf(valueKey('erk:', 'slow-refresh'));
      await eventually(async () => (await admin.exists(lock)) === 1, 'the refresh to take the lock');
      await eventually(
        async () => (await admin.exists(lock)) === 0,
        'the slow refresh to let go of the lock',
      );
      finish('late');
      // b's own refreshes fail, so whatever b reads is what a's refresh stored.
      await eventually(
        async () => (await b.wrap('slow-refresh', failing, options)) === 'late',
        'the late value to be stored',
      );
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('settling late after an invalidation of its key: stores nothing', async () => {
    const { a, b } = await staleEntry('slow-invalidated');
    try {
      const finish = await slowRefresh(a, 'slow-invalidated');
      await letGo('slow-invalidated');
      await b.invalidate({ keys: ['slow-invalidated'] });
      finish('read before the invalidation');
      await sleep(100);
      expect(await b.wrap('slow-invalidated', async () => 'fresh', options)).toBe('fresh');
      await sleep(100);
      expect(await b.wrap('slow-invalidated', async () => 'not called', options)).toBe('fresh');
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('settling late, after a newer fill in this instance: leaves the newer entry', async () => {
    const { a, b } = await staleEntry('slow-overtaken');
    try {
      const finish = await slowRefresh(a, 'slow-overtaken');
      await letGo('slow-overtaken');
      // The stale entry goes (its stale window ended, say): the next call fills from newer data.
      await admin.del(valueKey('erk:', 'slow-overtaken'));
      expect(await a.wrap('slow-overtaken', async () => 'newer', options)).toBe('newer');
      finish('older');
      await sleep(150);
      expect(await b.wrap('slow-overtaken', async () => 'not called', options)).toBe('newer');
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('settling late after an invalidation whose mark has expired (fn slower than a minute): stores nothing', async () => {
    const { a, b } = await staleEntry('slow-old-invalidation');
    try {
      const finish = await slowRefresh(a, 'slow-old-invalidation');
      const lock = lockKeyOf(valueKey('erk:', 'slow-old-invalidation'));
      await eventually(async () => (await admin.exists(lock)) === 1, 'the refresh to take the lock');
      await b.invalidate({ keys: ['slow-old-invalidation'] });
      await eventually(async () => (await admin.exists(lock)) === 0, 'the lock to go');
      await sleep(400); // past the let-go
      // The invalidation's mark lives max(60 s, 3 × lockTimeout): as if that had passed.
      expect(await admin.del(invalidatedKeyOf(valueKey('erk:', 'slow-old-invalidation')))).toBe(1);
      finish('read before the invalidation');
      await sleep(150);
      expect(await b.wrap('slow-old-invalidation', async () => 'fresh', options)).toBe('fresh');
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it("with L1: once it let go, the instance takes another instance's refresh from Redis over its stale copy", async () => {
    const { a, b } = await staleEntry('slow-l1', { max: 100 });
    try {
      let runs = 0;
      const hung = () => {
        runs++;
        return new Promise<string>(() => {});
      };
      expect(await a.wrap('slow-l1', hung, options)).toBe('first');
      await letGo('slow-l1');
      expect(await b.wrap('slow-l1', async () => 'second', options)).toBe('first');
      await eventually(
        async () => (await b.wrap('slow-l1', async () => 'third', options)) === 'second',
        "the other instance's refresh to land",
      );
      await eventually(async () => (await a.wrap('slow-l1', hung, options)) === 'second', 'a to take it');
      expect(runs).toBe(1);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('settling late, its stale L1 copy older than the (also stale) entry in Redis: still stores', async () => {
    const { a, b } = await staleEntry('slow-l1-older', { max: 100 });
    try {
      // b refreshes Redis (a's L1 keeps the first entry); then that one goes stale too.
      expect(await b.wrap('slow-l1-older', async () => 'second', options)).toBe('first');
      await eventually(
        async () => (await b.wrap('slow-l1-older', failing, options)) === 'second',
        "b's refresh to land",
      );
      await sleep(350);
      const finish = await slowRefresh(a, 'slow-l1-older');
      await letGo('slow-l1-older');
      finish('third');
      await eventually(
        async () => (await b.wrap('slow-l1-older', failing, options)) === 'third',
        'the late value to be stored',
      );
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('settling late, with a tag Redis cannot read as JSON (a lone surrogate): still stores', async () => {
    const tagged = { ...options, tags: ['title:\ud83d'] };
    const { a, b } = await staleEntry('slow-surrogate', false, tagged);
    try {
      const finish = await slowRefresh(a, 'slow-surrogate', tagged);
      await letGo('slow-surrogate');
      finish('late');
      await eventually(
        async () => (await b.wrap('slow-surrogate', failing, tagged)) === 'late',
        'the late value to be stored',
      );
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('settling late, under a Date.now() that returns fractions (a mock): still stores', async () => {
    const realNow = Date.now.bind(Date);
    const now = jest.spyOn(Date, 'now').mockImplementation(() => realNow() + 0.25);
    try {
      const { a, b } = await staleEntry('slow-fraction');
      try {
        const finish = await slowRefresh(a, 'slow-fraction');
        await letGo('slow-fraction');
        finish('late');
        await eventually(
          async () => (await b.wrap('slow-fraction', failing, options)) === 'late',
          'the late value to be stored',
        );
      } finally {
        await Promise.all([a.close(), b.close()]);
      }
    } finally {
      now.mockRestore();
    }
  });
});

describe('cache.wrap: a fill (a miss) whose fn takes longer than 3 × lockTimeout', () => {
  const options = { ttl: '1m', tags: ['shelf'] };
  /** Two instances, as two processes (no L1). */
  function twoInstances() {
    const make = () =>
      createCache({
        redis: redis.client(),
        l1: false,
        jitter: 0,
        lockTimeout: '100ms',
        logger: quietLogger(),
      });
    return { a: make(), b: make() };
  }

  /** Starts a's fill of `key` with an fn that settles when told; resolves once it let go of its lock. */
  async function slowFill(a: Cache, key: string) {
    let finish!: (v: string) => void;
    // The event, not the lock's absence: a renewal missed in an event-loop stall would look the same.
    const slow = captureEvents('cache');
    try {
      const value = a.wrap(key, () => new Promise<string>((r) => (finish = r)), options);
      await slow.waitFor('fill-slow', 1);
      return { value, finish: (v: string) => finish(v) };
    } finally {
      slow.stop();
    }
  }

  it('never settling: lets go of the lock, so another instance fills the key at once', async () => {
    const { a, b } = twoInstances();
    const events = captureEvents('cache');
    try {
      void a.wrap('hung-fill', () => new Promise<string>(() => {}), options);
      const lock = lockKeyOf(valueKey('erk:', 'hung-fill'));
      await eventually(async () => (await admin.exists(lock)) === 1, 'the fill to take the lock');
      await eventually(async () => (await admin.exists(lock)) === 0, 'the hung fill to let go of the lock');
      expect(events.events.filter((e) => e.type === 'fill-slow')).toMatchObject([
        { key: valueKey('erk:', 'hung-fill') },
      ]);
      expect(await b.wrap('hung-fill', async () => 'b', options)).toBe('b');
      // b took the lock and stored, rather than waiting and running fn uncached.
      expect(events.events.filter((e) => e.type === 'lock-wait')).toEqual([]);
      expect(await b.wrap('hung-fill', async () => 'not called', options)).toBe('b');
    } finally {
      events.stop();
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('settling late: its caller gets the value, and it is stored while the key is still empty', async () => {
    const { a, b } = twoInstances();
    try {
      const { value, finish } = await slowFill(a, 'slow-fill');
      finish('late');
      expect(await value).toBe('late');
      await eventually(
        async () => (await b.wrap('slow-fill', async () => 'not stored', options)) === 'late',
        'the late value to be stored',
      );
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('settling late, after another instance filled the key: leaves the newer entry', async () => {
    const { a, b } = twoInstances();
    const events = captureEvents('cache');
    try {
      const { value, finish } = await slowFill(a, 'slow-fill-overtaken');
      expect(await b.wrap('slow-fill-overtaken', async () => 'newer', options)).toBe('newer');
      finish('older');
      expect(await value).toBe('older');
      await eventually(
        async () => events.events.some((e) => e.type === 'store-dropped' && e.reason === 'replaced'),
        'the late store to be dropped',
      );
      expect(await b.wrap('slow-fill-overtaken', async () => 'not called', options)).toBe('newer');
    } finally {
      events.stop();
      await Promise.all([a.close(), b.close()]);
    }
  });

  it.each([
    ['its key', { keys: ['slow-fill-invalidated'] }],
    ['its tag', { tags: ['shelf'] }],
  ])('settling late, after an invalidation of %s: stores nothing', async (_what, target) => {
    const { a, b } = twoInstances();
    const events = captureEvents('cache');
    try {
      const { value, finish } = await slowFill(a, 'slow-fill-invalidated');
      await b.invalidate(target);
      finish('read before the invalidation');
      expect(await value).toBe('read before the invalidation');
      await eventually(
        async () => events.events.some((e) => e.type === 'store-dropped' && e.reason === 'invalidated'),
        'the late store to be dropped',
      );
      expect(await b.wrap('slow-fill-invalidated', async () => 'fresh', options)).toBe('fresh');
    } finally {
      events.stop();
      await Promise.all([a.close(), b.close()]);
    }
  });
});

describe('a cache store without the fill lock', () => {
  it('is dropped when its fill started 55 s ago or more: an invalidation mark since may have expired', async () => {
    const cache = createCache({ redis: redis.client(), l1: false, jitter: 0, logger: quietLogger() });
    const events = captureEvents('cache');
    try {
      const [seconds, micros] = await admin.time();
      const redisNow = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
      const entry = toEntry('v', resolveWrap({ ttl: '1m' }), (ms) => ms);
      const key = valueKey('erk:', 'lockless');
      expect(await cache.store(key, entry!, '', undefined, redisNow - 56_000)).toBe('dropped');
      expect(events.events.filter((e) => e.type === 'store-dropped')).toMatchObject([
        { key, reason: 'slow' },
      ]);
      expect(await admin.exists(key)).toBe(0);
      expect(await cache.store(key, entry!, '', undefined, redisNow - 50_000)).toBe('stored');
      expect(await admin.exists(key)).toBe(1);
    } finally {
      events.stop();
      await cache.close();
    }
  });
});

const makeCache = (lockTimeout = '100ms') =>
  createCache({ redis: redis.client(), l1: false, jitter: 0, lockTimeout, logger: quietLogger() });

/** A promise and the function that resolves it. */
function gate<T>() {
  let open!: (v: T) => void;
  const p = new Promise<T>((r) => (open = r));
  return { p, open };
}

describe('cache.wrap: a fill whose lock is no longer its own, settling with an uncacheable value', () => {
  it.each<[string, string, (other: Cache, name: string, lock: string) => Promise<unknown>]>([
    [
      'let go after 3 × lockTimeout',
      '100ms',
      (_other, _name, lock) =>
        eventually(async () => (await admin.exists(lock)) === 0, 'a to let go (fill-slow)'),
    ],
    ['lost to an invalidation', '1s', (other, name) => other.invalidate({ keys: [name] })],
  ])(
    '%s: leaves no no-store marker on the lock another instance took since: its waiters keep queueing on it',
    async (_how, lockTimeout, loseLock) => {
      const [a, b, c, other] = [1, 2, 3, 4].map(() => makeCache(lockTimeout)) as [Cache, Cache, Cache, Cache];
      const name = `nostore-${lockTimeout}`;
      const lock = lockKeyOf(valueKey('erk:', name));
      try {
        const aFn = gate<undefined>();
        const aValue = a.wrap(name, () => aFn.p, { ttl: '1m' });
        await eventually(async () => (await admin.exists(lock)) === 1, 'a to take the lock');
        await loseLock(other, name, lock);
        // b's miss takes the lock and fills (a healthy, slower fill).
        const bFn = gate<string>();
        const bValue = b.wrap(name, () => bFn.p, { ttl: '1m' });
        await eventually(async () => (await admin.exists(lock)) === 1, 'b to take the lock');
        aFn.open(undefined); // uncacheable (no cacheNullFor)
        expect(await aValue).toBeUndefined();
        await sleep(50);
        const marker = await admin.exists(noStoreKeyOf(valueKey('erk:', name)));
        // c misses while b still fills: it waits on b's lock, rather than running its own fn.
        let cCalls = 0;
        const cValue = c.wrap(
          name,
          async () => {
            cCalls++;
            return 'c';
          },
          { ttl: '1m' },
        );
        await sleep(50);
        bFn.open('b');
        expect(await bValue).toBe('b');
        expect({ marker, cCalls, c: await cValue }).toEqual({ marker: 0, cCalls: 0, c: 'b' });
      } finally {
        await Promise.all([a.close(), b.close(), c.close(), other.close()]);
      }
    },
  );
});

describe('cache.wrap: a caller that gave up waiting on a lock behind a stale entry (a store without the lock)', () => {
  it.each([
    ['keys', { keys: ['gave-up'] }],
    ['tags', { tags: ['shelf'] }],
  ])('honours an invalidation (by %s) while its fn ran', async (_what, target) => {
    const b = makeCache();
    const other = makeCache();
    const opts = { ttl: 100, staleIfError: '1m', tags: ['shelf'] };
    const key = valueKey('erk:', 'gave-up');
    const events = captureEvents('cache');
    try {
      expect(await b.wrap('gave-up', async () => 'first', opts)).toBe('first');
      await sleep(150); // past fresh; kept for staleIfError
      // Another process holds the fill lock (a slower fill there).
      await admin.set(lockKeyOf(key), 'foreign', 'PX', 5000);
      const fn = gate<string>();
      let started = false;
      const value = b.wrap(
        'gave-up',
        () => {
          started = true;
          return fn.p;
        },
        { ...opts, ttl: '1m' },
      );
      await eventually(() => started, 'b to give up waiting and run fn without the lock', 3000);
      await other.invalidate(target);
      fn.open('read before the invalidation');
      expect(await value).toBe('read before the invalidation');
      await sleep(100);
      const dropped = events.events.filter((e) => e.type === 'store-dropped').map((e) => e.reason);
      const next = await other.wrap('gave-up', async () => 'fresh', { ...opts, ttl: '1m' });
      expect({ dropped, next }).toEqual({ dropped: ['invalidated'], next: 'fresh' });
    } finally {
      events.stop();
      await Promise.all([b.close(), other.close()]);
    }
  });
});

describe('cache.wrap: a fill a coalesced caller gave up on', () => {
  it('reports no fill-slow later: the lock already went with the caller that gave up', async () => {
    const cache = makeCache();
    const events = captureEvents('cache');
    try {
      void cache.wrap('abandon-then-slow', () => new Promise<string>(() => {}), { ttl: '1m' });
      const follower = cache.wrap('abandon-then-slow', async () => 'mine', { ttl: '1m' });
      expect(await follower).toBe('mine');
      const atAbandon = events.count('fill-slow');
      await sleep(200);
      expect({ atAbandon, after: events.count('fill-slow') }).toEqual({ atAbandon: 0, after: 0 });
    } finally {
      events.stop();
      await cache.close();
    }
  });
});

describe('cache.wrap: a fill whose lookup found a stale entry, then (after an invalidation) nothing', () => {
  it('settling past 3 × lockTimeout: is stored, the key being as its last lookup found it (empty)', async () => {
    const a = makeCache('200ms');
    const other = makeCache();
    const opts = { ttl: 100, staleIfError: '1m' };
    const key = valueKey('erk:', 'stale-then-empty');
    const events = captureEvents('cache');
    try {
      expect(await a.wrap('stale-then-empty', async () => 'first', opts)).toBe('first');
      await sleep(150);
      await admin.set(lockKeyOf(key), 'foreign', 'PX', 5000);
      const fn = gate<string>();
      let started = false;
      const value = a.wrap(
        'stale-then-empty',
        () => {
          started = true;
          return fn.p;
        },
        { ...opts, ttl: '1m' },
      );
      await events.waitFor('lock-wait', 1); // a polled: the stale entry, the foreign lock
      await other.invalidate({ keys: ['stale-then-empty'] }); // entry and foreign lock go
      await eventually(() => started, 'a to take the lock on its next lookup (a miss)');
      await eventually(async () => (await admin.exists(lockKeyOf(key))) === 0, 'a to let go (fill-slow)');
      fn.open('late');
      expect(await value).toBe('late');
      await sleep(100);
      const dropped = events.events.filter((e) => e.type === 'store-dropped').map((e) => e.reason);
      expect({
        dropped,
        next: await other.wrap('stale-then-empty', async () => 'other', { ...opts, ttl: '1m' }),
      }).toEqual({
        dropped: [],
        next: 'late',
      });
    } finally {
      events.stop();
      await Promise.all([a.close(), other.close()]);
    }
  });

  it.each([
    ['', false],
    [' (L1 had a copy too)', { max: 100 }],
  ] as const)(
    'whose fn throws: does not answer with the invalidated entry as stale-if-error%s',
    async (_l1, l1) => {
      // lockTimeout 1 s: a polls for up to 3 s, long past the invalidation even on a loaded machine
      // (a caller that gave up before it would run without the lock, still holding the stale entry).
      const mk = () =>
        createCache({ redis: redis.client(), l1, jitter: 0, lockTimeout: '1s', logger: quietLogger() });
      const [a, other] = [mk(), mk()];
      await Promise.all([a.ready(), other.ready()]);
      const opts = { ttl: 100, staleIfError: '1m' };
      const name = `stale-then-throw-${l1 ? 'l1' : 'redis'}`;
      const events = captureEvents('cache');
      try {
        expect(await a.wrap(name, async () => 'invalidated value', opts)).toBe('invalidated value');
        await sleep(150); // past fresh: Redis (and L1) keep it for staleIfError
        await admin.set(lockKeyOf(valueKey('erk:', name)), 'foreign', 'PX', 5000);
        const fn = gate<string>();
        let started = false;
        const value = a.wrap(
          name,
          () => {
            started = true;
            return fn.p.then(() => {
              throw new Error('origin down');
            });
          },
          opts,
        );
        value.catch(() => {});
        await events.waitFor('lock-wait', 1); // a polled: the stale entry, the foreign lock
        await other.invalidate({ keys: [name] }); // the entry, the lock (and a's L1 copy) go
        await eventually(() => started, 'a to take the lock on its next lookup (a miss)');
        await eventually(
          () => a.l1?.get(valueKey('erk:', name), Date.now()) === undefined,
          "the invalidation to reach a's L1",
        );
        fn.open('');
        const outcome = await value.then(
          (v) => ({ value: v }),
          (e: Error) => ({ error: e.message }),
        );
        expect({ outcome, staleIfError: events.count('stale-if-error') }).toEqual({
          outcome: { error: 'origin down' },
          staleIfError: 0,
        });
      } finally {
        events.stop();
        await Promise.all([a.close(), other.close()]);
      }
    },
  );
});

describe('cache.wrap: store-dropped reasons', () => {
  it("'lock-lost' for a fill that held its lock and lost it to invalidate({ keys }) before settling", async () => {
    const a = makeCache('1s');
    const other = makeCache();
    const events = captureEvents('cache');
    try {
      const fn = gate<string>();
      const value = a.wrap('lost', () => fn.p, { ttl: '1m' });
      await eventually(
        async () => (await admin.exists(lockKeyOf(valueKey('erk:', 'lost')))) === 1,
        'a to take the lock',
      );
      await other.invalidate({ keys: ['lost'] });
      fn.open('old');
      expect(await value).toBe('old');
      await events.waitFor('store-dropped', 1);
      expect(events.events.filter((e) => e.type === 'store-dropped').map((e) => e.reason)).toEqual([
        'lock-lost',
      ]);
    } finally {
      events.stop();
      await Promise.all([a.close(), other.close()]);
    }
  });
});
