import Redis from 'ioredis';
import { cacheResponse, createCache, idempotency, redisSession, withLock } from '../../lib';

// Never connects: options are checked before any Redis call.
const redis = new Redis({ lazyConnect: true });
const secret = 'x'.repeat(32);
// The caches below try to subscribe on a client that never connects: keep that quiet.
const logger = { warn() {} };
afterAll(() => redis.disconnect());

function thrown(make: () => unknown): Error {
  try {
    make();
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected the call to throw');
}

describe('unknown option names are refused', () => {
  it.each<[string, () => unknown, string]>([
    ['cacheResponse', () => cacheResponse({ redis, ttl: 1000, foo: 1 } as never), 'cacheResponse'],
    ['createCache', () => createCache({ redis, bogus: 1 } as never), 'createCache'],
    ['idempotency', () => idempotency({ redis, foo: 1 } as never), 'idempotency'],
    ['redisSession', () => redisSession({ redis, secret, foo: 1 } as never), 'redisSession'],
  ])('%s names the unknown option', (_name, make, component) => {
    const error = thrown(make);
    expect(error).toBeInstanceOf(TypeError);
    expect(error.message).toMatch(new RegExp(`option "(foo|bogus)" is not an? ${component} option`));
  });

  it('says "an" before a vowel', () => {
    expect(thrown(() => idempotency({ redis, foo: 1 } as never)).message).toMatch(
      /is not an idempotency option/,
    );
  });

  it('cache.wrap() refuses an unknown option per call, before running fn', async () => {
    const cache = createCache({ redis, logger });
    let ran = false;
    const error = await cache
      .wrap(
        'k',
        async () => {
          ran = true;
          return 1;
        },
        { ttl: '1m', staleWhileRevalidte: '1m' } as never,
      )
      .then(
        () => undefined,
        (e: unknown) => e as Error,
      );
    expect(error).toBeInstanceOf(TypeError);
    expect(error!.message).toMatch(/option "staleWhileRevalidte" is not a cache.wrap option/);
    expect(ran).toBe(false);
  });

  it('withLock rejects an unknown option before taking the lock', async () => {
    const fn = jest.fn();
    await expect(withLock(redis, 'x', fn, { bogus: 1 } as never)).rejects.toThrow(
      /option "bogus" is not a withLock option/,
    );
    await expect(withLock(redis, 'x', fn, { bogus: 1 } as never)).rejects.toThrow(TypeError);
    expect(fn).not.toHaveBeenCalled();
  });

  it('checks the nested l1 and cookie objects too', () => {
    expect(() => createCache({ redis, l1: { max: 10, maxItems: 5 } as never })).toThrow(
      /option "l1.maxItems" is not a cache L1 option\. Use "max"/,
    );
    expect(() => cacheResponse({ redis, ttl: 1000, l1: { ttl: '1m', size: 1 } as never })).toThrow(
      /option "l1.size"/,
    );
    expect(() => redisSession({ redis, secret, cookie: { sameSit: 'strict' } as never })).toThrow(
      /option "cookie.sameSit" is not a cookie option/,
    );
  });

  it('hints at the kit name of options carried over from other libraries', () => {
    expect(() => cacheResponse({ redis, ttl: 1000, debug: true } as never)).toThrow(/"debug"/);
    expect(() => idempotency({ redis, headerName: 'Idempotency-Key' } as never)).toThrow(/\. Use "header"\./);
    expect(() => redisSession({ redis, secret, key: 'sid' } as never)).toThrow(
      /\. Use "name" \(the cookie name\)\./,
    );
  });
});

describe('every documented option is still accepted', () => {
  it('cacheResponse with every option (and createCache with its own)', () => {
    const all = {
      redis,
      ttl: '5m',
      key: () => 'k',
      scope: () => 'u',
      tags: () => ['t'],
      vary: ['accept'],
      staleWhileRevalidate: '1m',
      staleIfError: '1m',
      l1: { max: 10, maxSize: 1024, ttl: '1m' },
      jitter: 0.2,
      maxBodySize: 1024,
      statuses: [200],
      methods: ['GET'],
      lockTimeout: '2s',
      timeout: '100ms',
      shouldCache: () => true,
      prefix: 'erk:',
      sessionCookie: ['sid'],
      credentialHeaders: false as const,
      name: 'products',
      logger,
    };
    expect(() => cacheResponse(all)).not.toThrow();
    const cache = createCache({
      redis,
      l1: { max: 10, maxSize: 1024, ttl: '1m' },
      prefix: 'erk:',
      timeout: '100ms',
      lockTimeout: '2s',
      jitter: 0,
      name: 'c',
      logger,
    });
    expect(() => cacheResponse({ cache, ttl: '5m', jitter: 0, name: 'shared' })).not.toThrow();
  });

  it('idempotency with every option', () => {
    expect(() =>
      idempotency({
        redis,
        scope: () => 'u',
        header: 'Idempotency-Key',
        required: true,
        methods: ['POST'],
        ttl: '1h',
        lockTtl: '10s',
        fingerprint: () => 'f',
        storeStatuses: [200],
        maxBodySize: 10,
        failMode: 'open',
        timeout: '100ms',
        retryAfter: '2s',
        prefix: 'erk:',
        name: 'orders',
      }),
    ).not.toThrow();
  });

  it('redisSession with every option and every cookie setting express-session applies', () => {
    expect(() =>
      redisSession({
        redis,
        secret: [secret, secret],
        name: 'sid',
        ttl: '1h',
        rolling: false,
        cookie: {
          domain: 'example.com',
          path: '/',
          httpOnly: true,
          secure: 'auto',
          sameSite: 'strict',
          partitioned: false,
          priority: 'high',
        },
        prefix: 'erk:',
        timeout: '100ms',
        proxy: true,
        maxSessionsPerUser: false,
      }),
    ).not.toThrow();
  });
});

describe('redisSession: fixed settings and express-session options it does not take', () => {
  it.each<[string, object, RegExp]>([
    ['resave', { resave: true }, /option "resave" is not a redisSession option\. Fixed to false: /],
    [
      'saveUninitialized',
      { saveUninitialized: true },
      /option "saveUninitialized" is not a redisSession option\. Fixed to false: /,
    ],
    ['unset', { unset: 'destroy' }, /option "unset" is not a redisSession option\. Fixed to 'keep': /],
    ['store', { store: {} }, /option "store" is not a redisSession option\. .*Redis/],
    ['genid', { genid: () => 'id' }, /option "genid" is not a redisSession option\. /],
  ])('refuses %s, saying why', (_name, extra, message) => {
    expect(() => redisSession({ redis, secret, ...extra } as never)).toThrow(message);
  });

  it('refuses resave: false too (it is not an option), with the same reason', () => {
    expect(() => redisSession({ redis, secret, resave: false } as never)).toThrow(/Fixed to false/);
  });

  it('names cookie.expires when that is what was passed, and cookie.maxAge for maxAge', () => {
    const expires = thrown(() => redisSession({ redis, secret, cookie: { expires: new Date() } as never }));
    expect(expires).toBeInstanceOf(TypeError);
    expect(expires.message).toMatch(/option "cookie.expires"/);
    expect(expires.message).toMatch(/ttl/);
    expect(expires.message).not.toMatch(/maxAge/);
    expect(() => redisSession({ redis, secret, cookie: { maxAge: 1000 } as never })).toThrow(
      /option "cookie.maxAge".*ttl/,
    );
  });

  it('refuses cookie settings express-session would silently drop', () => {
    expect(() => redisSession({ redis, secret, cookie: { signed: false } as never })).toThrow(
      /option "cookie.signed" is not a cookie option\. .*always signed/,
    );
    expect(() => redisSession({ redis, secret, cookie: { encode: String } as never })).toThrow(
      /option "cookie.encode" is not a cookie option/,
    );
  });
});

describe('durations beyond any use are refused at construction, not by Redis on every request', () => {
  it.each<[string, () => unknown, string]>([
    ['redisSession ttl', () => redisSession({ redis, secret, ttl: 1e21 }), 'ttl'],
    ['cacheResponse ttl', () => cacheResponse({ redis, ttl: '1000y', logger }), 'ttl'],
    ['idempotency ttl', () => idempotency({ redis, ttl: 1e16 }), 'ttl'],
    [
      'cacheResponse staleWhileRevalidate',
      () => cacheResponse({ redis, ttl: 1000, staleWhileRevalidate: 1e20, logger }),
      'staleWhileRevalidate',
    ],
  ])('%s', (_case, make, option) => {
    const error = thrown(make);
    expect(error).toBeInstanceOf(RangeError);
    expect(error.message).toMatch(new RegExp(`option "${option}" must be at most \\d+ ms \\(100 years\\)`));
  });
});
