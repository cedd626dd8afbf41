import Redis, { Cluster } from 'ioredis';
import {
  cacheResponse,
  createCache,
  createRedis,
  idempotency,
  rateLimit,
  redisSession,
  withLock,
} from '../../lib';
import { checkClient } from '../../lib/client';
import { toMs } from '../../lib/duration';
import { checkPrefix, safePart, taggedKey } from '../../lib/keys';

describe('durations', () => {
  it('accepts milliseconds and ms-style strings', () => {
    expect(toMs(250, 'ttl')).toBe(250);
    expect(toMs('5m', 'ttl')).toBe(300_000);
    expect(toMs('1.5s', 'ttl')).toBe(1500);
    expect(toMs('42', 'ttl')).toBe(42);
  });

  it('names the option and the fix for bad values', () => {
    expect(() => toMs('soon', 'ttl')).toThrow(
      /option "ttl" must be a number of milliseconds or a duration string/,
    );
    expect(() => toMs(0, 'window')).toThrow(RangeError);
    expect(() => toMs(0, 'window')).toThrow(/"window" must be at least 1 ms/);
    expect(toMs(0, 'staleWhileRevalidate', { allowZero: true })).toBe(0);
    expect(() => toMs(Number.NaN, 'ttl')).toThrow(TypeError);
  });
});

describe('timer-bound durations', () => {
  // Node fires a timer longer than 2^31-1 ms after 1 ms: a generous timeout would become an instant one.
  const redis = new Redis({ lazyConnect: true });
  afterAll(() => redis.disconnect());
  const secret = 'x'.repeat(32);

  it.each<[string, () => unknown]>([
    ['cache timeout', () => createCache({ redis, timeout: '30d' })],
    ['cache lockTimeout', () => createCache({ redis, lockTimeout: '30d' })],
    ['idempotency timeout', () => idempotency({ redis, timeout: '30d' })],
    ['idempotency lockTtl', () => idempotency({ redis, lockTtl: '30d' })],
    ['session timeout', () => redisSession({ redis, secret, timeout: '30d' })],
  ])('refuses a %s beyond the longest Node timer, naming the option', (_name, make) => {
    expect(make).toThrow(RangeError);
    expect(make).toThrow(/must be at most 2147483647 ms \(about 24.8 days, the longest Node timer\)/);
  });

  it('refuses a withLock timeout beyond the longest Node timer, and a ttl whose renewal timer would be', async () => {
    await expect(withLock(redis, 'k', async () => 1, { timeout: '30d' })).rejects.toThrow(
      /"timeout" must be at most/,
    );
    await expect(withLock(redis, 'k', async () => 1, { ttl: '80d' })).rejects.toThrow(
      /"ttl" must be at most/,
    );
  });
});

describe('keys', () => {
  it('puts the operation id in a hash tag and hashes unsafe or long parts', () => {
    expect(taggedKey('erk:', 'rl', '1.2.3.4', 'p0')).toBe('erk:rl:{1.2.3.4}:p0');
    const braces = taggedKey('erk:', 'rl', 'a}{b');
    expect(braces).toMatch(/^erk:rl:\{#[A-Za-z0-9_-]{22}\}$/);
    expect(safePart('x'.repeat(65))).toMatch(/^#/);
    expect(safePart('x'.repeat(65))).toBe(safePart('x'.repeat(65)));
  });

  it('refuses prefixes with braces', () => {
    expect(() => checkPrefix('a{b}')).toThrow(/"prefix" must be a string without/);
    expect(checkPrefix('app:')).toBe('app:');
  });
});

describe('client option', () => {
  it('names the option when it is not an ioredis client', () => {
    expect(() => checkClient(undefined)).toThrow(
      /option "redis" must be an ioredis Redis or Cluster client.*required/,
    );
    expect(() => checkClient({ get() {} })).toThrow(/got an object \(Object\)/);
    // Options typed as a whole CreateRedisOptions with failFast: true make createRedis() a Promise.
    const pending = Promise.resolve('client');
    expect(() => checkClient(pending)).toThrow(
      /got a Promise; createRedis\(\{ failFast: true \}\).*await it first/,
    );
  });

  it("refuses a client made with stringNumbers: true in every middleware (its scripts' integer replies would be strings)", async () => {
    // Such a client made every request 429 and every cache lookup wait 3 × lockTimeout.
    const standalone = new Redis({ lazyConnect: true, stringNumbers: true });
    const cluster = new Cluster([{ host: '127.0.0.1', port: 1 }], {
      lazyConnect: true,
      redisOptions: { stringNumbers: true },
    });
    try {
      for (const redis of [standalone, cluster]) {
        const made: Array<() => unknown> = [
          () => rateLimit({ redis, limit: 1, window: '1m' }),
          () => cacheResponse({ redis, ttl: '1m' }),
          () => createCache({ redis }),
          () => idempotency({ redis }),
          () => redisSession({ redis, secret: 'x'.repeat(32) }),
        ];
        for (const make of made) {
          expect(make).toThrow(
            /option "redis" is a client made with stringNumbers: true.*stringNumbers: false/,
          );
        }
        await expect(withLock(redis, 'k', async () => 1)).rejects.toThrow(/stringNumbers: true/);
      }
      expect(() => createRedis({ stringNumbers: true, lazyConnect: true } as never)).toThrow(
        /option "stringNumbers" cannot be on/,
      );
      // ioredis reads any true-ish value as on, also the string 'false' of an environment variable.
      expect(() => createRedis({ stringNumbers: 'false', lazyConnect: true } as never)).toThrow(
        /option "stringNumbers" cannot be on/,
      );
      // A URL's query becomes ioredis options.
      expect(() =>
        createRedis({ url: 'redis://127.0.0.1:1/0?stringNumbers=true', lazyConnect: true }),
      ).toThrow(/option "url" turns on stringNumbers/);
      const fromUrl = new Redis('redis://127.0.0.1:1/0?stringNumbers=true', { lazyConnect: true });
      expect(() => rateLimit({ redis: fromUrl, limit: 1, window: '1m' })).toThrow(/stringNumbers/);
      fromUrl.disconnect();
      expect(() =>
        createRedis({
          cluster: { nodes: ['127.0.0.1:1'], options: { redisOptions: { stringNumbers: true } } },
          lazyConnect: true,
        } as never),
      ).toThrow(/option "cluster.options.redisOptions.stringNumbers" cannot be on/);
    } finally {
      standalone.disconnect();
      cluster.disconnect();
    }
  });
});
