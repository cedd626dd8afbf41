import Redis from 'ioredis';
import { taggedKey } from '../../lib/keys';
import { type RateLimitOptions, rateLimit } from '../../lib/rate-limit';
import { createIpGrouper } from '../../lib/rate-limit/client-key';
import { DenyCache } from '../../lib/rate-limit/deny-cache';

// Construction never talks to Redis, so a lazy client that never connects is enough here.
const redis = new Redis({ lazyConnect: true });
afterAll(() => redis.disconnect());

const make = (options: Partial<RateLimitOptions>) => () =>
  rateLimit({ redis, limit: 10, window: '1m', ...options } as RateLimitOptions);

describe('rateLimit options', () => {
  it('returns a named middleware function carrying reset() and get()', () => {
    const limiter = make({})();
    expect(typeof limiter).toBe('function');
    expect(limiter.name).toBe('rateLimitMiddleware');
    expect(typeof limiter.reset).toBe('function');
    expect(typeof limiter.get).toBe('function');
  });

  it.each<[string, Partial<RateLimitOptions>, ErrorConstructor, RegExp]>([
    ['missing redis', { redis: undefined }, TypeError, /"redis" must be an ioredis/],
    ['limit 0', { limit: 0 }, RangeError, /"limit" must be a whole number from 1 to 1000000000000; got 0/],
    ['limit beyond a trillion', { limit: 1e13 }, RangeError, /"limit" must be a whole number from 1 to/],
    ['negative limit', { limit: -5 }, RangeError, /"limit"/],
    ['fractional limit', { limit: 1.5 }, RangeError, /"limit"/],
    ['string limit', { limit: '10' as never }, TypeError, /"limit"/],
    ['missing limit', { limit: undefined }, TypeError, /"limit" is required/],
    ['missing window', { window: undefined }, TypeError, /"window" is required/],
    ['window 0', { window: 0 }, RangeError, /"window" must be at least 1 ms/],
    [
      'window garbage',
      { window: 'soon' },
      TypeError,
      /"window" must be a number of milliseconds or a duration/,
    ],
    ['window too long', { window: '400d' }, RangeError, /"window" must be at most 366 days/],
    [
      'token-bucket limit x window beyond 2^53',
      { algorithm: 'token-bucket', limit: 1e12, window: '1d' },
      RangeError,
      /"limit" times the window \(ms\) must stay below 2\^53/,
    ],
    [
      'gcra faster than 10 per ms (its interval is whole µs)',
      { algorithm: 'gcra', limit: 10_001, window: 1000 },
      RangeError,
      /"limit" is too high for gcra over 1s: window \/ limit must be at least 100 µs .*got 10001\. Use algorithm 'token-bucket'/,
    ],
    [
      'unknown algorithm',
      { algorithm: 'leaky' as never },
      TypeError,
      /"algorithm" must be one of fixed-window/,
    ],
    ['cost > limit', { cost: 11 }, RangeError, /"cost" \(11\) is larger than the limit \(10\)/],
    ['cost 0', { cost: 0 }, RangeError, /"cost" must be a whole number >= 1/],
    ['cost string', { cost: '1' as never }, TypeError, /"cost" must be a number or a function/],
    ['bad headers', { headers: 'draft-9' as never }, TypeError, /"headers" must be 'draft-8'/],
    ['bad statusCode', { statusCode: 200 }, RangeError, /"statusCode" must be an HTTP error status/],
    ['statusCode as a string', { statusCode: '429' as never }, TypeError, /"statusCode"/],
    ['bad failMode', { failMode: 'maybe' as never }, TypeError, /"failMode" must be 'open' or 'closed'/],
    ['bad timeout', { timeout: 0 }, RangeError, /"timeout" must be at least 1 ms/],
    // Node fires longer timers after 1 ms, which would turn a lenient timeout into an instant one.
    [
      'timeout beyond a Node timer',
      { timeout: '30d' },
      RangeError,
      /"timeout" must be at most 2147483647 ms/,
    ],
    // A string from an environment variable must not switch a feature on by being truthy.
    [
      'dryRun as a string',
      { dryRun: 'false' as never },
      TypeError,
      /"dryRun" must be true or false; got "false"/,
    ],
    [
      'skipSuccessfulRequests as a string',
      { skipSuccessfulRequests: 'true' as never },
      TypeError,
      /"skipSuccessfulRequests" must be true or false/,
    ],
    [
      'skipFailedRequests as a number',
      { skipFailedRequests: 1 as never },
      TypeError,
      /"skipFailedRequests" must be true or false/,
    ],
    [
      'denyCache as a string',
      { denyCache: 'off' as never },
      TypeError,
      /"denyCache" must be false or \{ max \}/,
    ],
    ['prefix with braces', { prefix: '{x}' }, TypeError, /"prefix" must be a string without/],
    ['bad ipv6Subnet', { ipv6Subnet: 129 }, RangeError, /"ipv6Subnet" must be a prefix length/],
    ['ipv6Subnet as a string', { ipv6Subnet: '56' as never }, TypeError, /"ipv6Subnet"/],
    ['key not a function', { key: 'ip' as never }, TypeError, /"key" must be a function/],
    ['bad name', { name: 'has space' }, TypeError, /"name" must be 1-64 characters/],
    ['bad denyCache.max', { denyCache: { max: 0 } }, RangeError, /"denyCache.max"/],
    [
      'a misspelt denyCache option',
      { denyCache: { maxSize: 5 } as never },
      TypeError,
      /"denyCache.maxSize" is not a denyCache option/,
    ],
    [
      'denyCache as an array',
      { denyCache: [] as never },
      TypeError,
      /"denyCache" must be false or \{ max \}/,
    ],
    ['denyCache.max as a string', { denyCache: { max: '5' as never } }, TypeError, /"denyCache.max"/],
    [
      'express-rate-limit windowMs',
      { windowMs: 1000 } as never,
      TypeError,
      /"windowMs" is not a rateLimit option\. Use "window"/,
    ],
    [
      'express-rate-limit max',
      { max: 5 } as never,
      TypeError,
      /"max" is not a rateLimit option\. Use "limit"/,
    ],
    ['typo', { limt: 5 } as never, TypeError, /"limt" is not a rateLimit option/],
    [
      'rate-limiter-flexible style passOnStoreError',
      { passOnStoreError: true } as never,
      TypeError,
      /"passOnStoreError" is not a rateLimit option\. Use "failMode: 'open'"/,
    ],
    [
      'a typo inside a policy',
      {
        limit: undefined,
        window: undefined,
        policies: [{ limit: 5, window: '1s', algoritm: 'gcra' }],
      } as never,
      TypeError,
      /"policies\[0\]\.algoritm" is not a policy option/,
    ],
    [
      'express-rate-limit names inside a policy',
      { limit: undefined, window: undefined, policies: [{ max: 5, window: '1s' }] } as never,
      TypeError,
      /"policies\[0\]\.max" is not a policy option\. Use "limit"/,
    ],
    ['NaN limit, shown as NaN', { limit: Number.NaN }, RangeError, /"limit" .*got NaN/],
    ['Infinity limit, shown as Infinity', { limit: Number.POSITIVE_INFINITY }, RangeError, /got Infinity/],
    [
      'policies with limit',
      { policies: [{ limit: 1, window: 1000 }] },
      TypeError,
      /"policies" cannot be combined/,
    ],
    [
      'empty policies',
      { limit: undefined, window: undefined, policies: [] },
      TypeError,
      /"policies" must be a non-empty array/,
    ],
    [
      'bad policy limit',
      {
        limit: undefined,
        window: undefined,
        policies: [
          { limit: 1, window: 1000 },
          { limit: 0, window: 1000 },
        ],
      },
      RangeError,
      /"policies\[1\]\.limit"/,
    ],
    [
      'bad policy algorithm',
      {
        limit: undefined,
        window: undefined,
        policies: [{ limit: 1, window: 1000, algorithm: 'x' as never }],
      },
      TypeError,
      /"policies\[0\]\.algorithm"/,
    ],
    [
      'unknown top-level algorithm next to policies that name their own',
      {
        limit: undefined,
        window: undefined,
        algorithm: 'fixd-window' as never,
        policies: [{ limit: 1, window: 1000, algorithm: 'gcra' }],
      },
      TypeError,
      /"algorithm" must be one of/,
    ],
    [
      'duplicate policy names',
      {
        limit: undefined,
        window: undefined,
        policies: [
          { limit: 1, window: 1000 },
          { limit: 1, window: 1000 },
        ],
      },
      TypeError,
      /duplicate names/,
    ],
    [
      'the same quota twice under two names',
      {
        limit: undefined,
        window: undefined,
        policies: [
          { limit: 5, window: '1s', name: 'a' },
          { limit: 5, window: 1000, name: 'b' },
        ],
      },
      TypeError,
      /policies\[1\].*same quota as policies\[0\]/,
    ],
    [
      'policy name with a quote',
      { limit: undefined, window: undefined, policies: [{ limit: 1, window: 1000, name: 'a"b' }] },
      TypeError,
      /"policies\[0\]\.name"/,
    ],
    [
      'cost above the smallest policy limit',
      {
        limit: undefined,
        window: undefined,
        cost: 3,
        policies: [
          { limit: 2, window: 1000 },
          { limit: 9, window: 1000 },
        ],
      },
      RangeError,
      /"cost" \(3\) is larger than the limit \(2\)/,
    ],
  ])('rejects %s at construction, naming the option', (_case, options, type, message) => {
    expect(make(options)).toThrow(type);
    expect(make(options)).toThrow(message);
  });

  it('accepts every algorithm, duration strings, numbers and function costs', () => {
    for (const algorithm of ['fixed-window', 'sliding-window', 'token-bucket', 'gcra'] as const) {
      expect(make({ algorithm, window: 1500, cost: () => 2 })).not.toThrow();
    }
    expect(make({ algorithm: 'gcra', limit: 10_000, window: 1000 })).not.toThrow();
    expect(
      make({
        limit: undefined,
        window: undefined,
        policies: [
          { limit: 5, window: '1s' },
          { limit: 100, window: '1h' },
        ],
      }),
    ).not.toThrow();
  });
});

describe('deny cache', () => {
  it('answers only until the retry time and only requests of the denied cost (only Redis knows when a heavier one could pass)', () => {
    const cache = new DenyCache(2);
    cache.set(
      'a',
      { until: 1000, cost: 3, reply: [0, 0, 0, 500, 500], binding: 0, readAt: 501 },
      cache.stamp(),
    );
    expect(cache.get('a', 3, 999)).toBeDefined();
    expect(cache.get('a', 5, 999)).toBeUndefined();
    expect(cache.get('a', 2, 999)).toBeUndefined();
    expect(cache.get('a', 3, 1000)).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it('stays bounded, dropping the oldest entry first', () => {
    const cache = new DenyCache(2);
    const entry = { until: 10, cost: 1, reply: [], binding: 0, readAt: 0 };
    cache.set('a', entry, cache.stamp());
    cache.set('b', entry, cache.stamp());
    cache.set('c', entry, cache.stamp());
    expect(cache.size).toBe(2);
    expect(cache.get('a', 1, 0)).toBeUndefined();
    expect(cache.get('c', 1, 0)).toBeDefined();
  });
  it("keeps out a denial sent before its own key's refund, not one sent before another key's", () => {
    const cache = new DenyCache(4);
    const entry = { until: 10, cost: 1, reply: [], binding: 0, readAt: 0 };
    const sentAt = cache.stamp();
    cache.forget('a');
    cache.set('a', entry, sentAt);
    cache.set('b', entry, sentAt);
    expect(cache.get('a', 1, 0)).toBeUndefined();
    expect(cache.get('b', 1, 0)).toBeDefined();
    // Sent after the refund: current again.
    cache.set('a', entry, cache.stamp());
    expect(cache.get('a', 1, 0)).toBeDefined();
    // forget() also drops what is remembered.
    cache.forget('b');
    expect(cache.get('b', 1, 0)).toBeUndefined();
  });

  it('when more keys were refunded than it tracks, keeps out every denial sent before, never a stale one', () => {
    const cache = new DenyCache(2);
    const entry = { until: 10, cost: 1, reply: [], binding: 0, readAt: 0 };
    const sentAt = cache.stamp();
    cache.forget('a');
    cache.forget('b');
    cache.forget('c'); // over the bound: 'a' is no longer tracked by itself
    for (const key of ['a', 'c', 'd']) cache.set(key, entry, sentAt);
    expect(cache.size).toBe(0);
    const later = cache.stamp();
    for (const key of ['a', 'd']) cache.set(key, entry, later);
    expect(cache.size).toBe(2);
  });
});

describe('client key grouping', () => {
  it('masks IPv6 to the subnet and leaves IPv4 and non-IP keys alone', () => {
    const group = createIpGrouper(56);
    expect(group('2001:db8:1:2ff::1')).toBe('2001:db8:1:200::/56');
    expect(group('2001:0db8:0001:02aa:0:0:0:9')).toBe('2001:db8:1:200::/56');
    expect(group('192.0.2.1')).toBe('192.0.2.1');
    expect(group('::ffff:192.0.2.1')).toBe('192.0.2.1');
    expect(group('not:an:ip:')).toBe('not:an:ip:');
    expect(createIpGrouper(64)('2001:db8:1:2ff:abcd::1')).toBe('2001:db8:1:2ff::/64');
  });

  it('builds keys in the same layout as the shared taggedKey()', () => {
    // The limiter concatenates precomputed parts on the request path; this pins the layout.
    expect(taggedKey('erk:', 'rl', '2001:db8::/56', 's:10:60000')).toBe('erk:rl:{2001:db8::/56}:s:10:60000');
  });
});
