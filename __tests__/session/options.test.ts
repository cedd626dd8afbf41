import Redis from 'ioredis';
import { redisSession } from '../../lib/session';
import { MIN_SECRET_LENGTH } from '../../lib/session/secrets';
import { resetSessionWarnings } from '../../lib/session/warnings';

// Never connects: option validation happens before any Redis call.
const redis = new Redis({ lazyConnect: true });
const strong = 'x'.repeat(MIN_SECRET_LENGTH);

describe('redisSession options', () => {
  const env = process.env.NODE_ENV;
  afterEach(() => {
    process.env.NODE_ENV = env;
    jest.restoreAllMocks();
  });
  afterAll(() => redis.disconnect());

  it('refuses to start in production without a secret, or with one shorter than 32 characters', () => {
    process.env.NODE_ENV = 'production';
    expect(() => redisSession({ redis })).toThrow(/option "secret" is required when NODE_ENV=production/);
    expect(() => redisSession({ redis })).toThrow(TypeError);
    expect(() => redisSession({ redis, secret: 'short' })).toThrow(RangeError);
    expect(() => redisSession({ redis, secret: [strong, 'old-and-short'] })).toThrow(
      /at least 32 characters/,
    );
    expect(() => redisSession({ redis, secret: strong })).not.toThrow();
  });

  it('outside production, warns once about a missing or weak secret and still starts', () => {
    process.env.NODE_ENV = 'development';
    resetSessionWarnings();
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => {});
    expect(() => redisSession({ redis })).not.toThrow();
    expect(() => redisSession({ redis, secret: 'short' })).not.toThrow();
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0]![0])).toMatch(/secret/);
  });

  it('warns once when two session cookies share one client and prefix (one user index for both)', () => {
    resetSessionWarnings();
    // A database of its own: the other tests' sessions on the default one would count.
    const client = new Redis({ lazyConnect: true, db: 9 });
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => {});
    try {
      redisSession({ redis: client, secret: strong, name: 'site' });
      redisSession({ redis: client, secret: strong, name: 'site' }); // one system mounted twice
      redisSession({ redis: client, secret: strong, name: 'staff', prefix: 'staff:' });
      expect(warn).not.toHaveBeenCalled();
      redisSession({ redis: client, secret: strong, name: 'admin' });
      redisSession({ redis: client, secret: strong, name: 'other' });
      expect(warn).toHaveBeenCalledTimes(1);
      expect(warn.mock.calls[0]![0]).toMatch(
        /cookies "site" and "admin" are sessions on one Redis with one prefix \("erk:"\).*Give each its own prefix/,
      );
      expect(warn.mock.calls[0]![1]).toEqual({ code: 'ERK_SESSION_SHARED_INDEX' });
    } finally {
      client.disconnect();
    }
  });

  it('warns as well when each middleware has its own client on the same Redis', () => {
    resetSessionWarnings();
    const url = 'redis://127.0.0.1:6390/3';
    const clients = [new Redis(url, { lazyConnect: true }), new Redis(url, { lazyConnect: true })];
    const elsewhere = new Redis('redis://127.0.0.1:6390/4', { lazyConnect: true });
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => {});
    try {
      redisSession({ redis: clients[0]!, secret: strong, name: 'site' });
      redisSession({ redis: elsewhere, secret: strong, name: 'admin' }); // another database
      expect(warn).not.toHaveBeenCalled();
      redisSession({ redis: clients[1]!, secret: strong, name: 'admin' });
      expect(warn).toHaveBeenCalledTimes(1);
      expect(warn.mock.calls[0]![1]).toEqual({ code: 'ERK_SESSION_SHARED_INDEX' });
    } finally {
      for (const c of [...clients, elsewhere]) c.disconnect();
    }
  });

  it('does not count a session system whose client was closed since (an earlier app, an earlier test)', () => {
    resetSessionWarnings();
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => {});
    const earlier = new Redis('redis://127.0.0.1:6390/5', { lazyConnect: true });
    redisSession({ redis: earlier, secret: strong, name: 'old' });
    earlier.disconnect();
    const later = new Redis('redis://127.0.0.1:6390/5', { lazyConnect: true });
    try {
      redisSession({ redis: later, secret: strong, name: 'new' });
      expect(warn).not.toHaveBeenCalled();
    } finally {
      later.disconnect();
    }
  });

  it('names the option and the fix for bad values', () => {
    expect(() => redisSession({ redis: undefined as never, secret: strong })).toThrow(/option "redis"/);
    expect(() => redisSession({ redis, secret: strong, name: 'a b' })).toThrow(/option "name"/);
    expect(() => redisSession({ redis, secret: strong, ttl: 'soon' })).toThrow(/option "ttl"/);
    expect(() => redisSession({ redis, secret: strong, ttl: 10 })).toThrow(RangeError);
    expect(() => redisSession({ redis, secret: strong, prefix: 'a{b}' })).toThrow(/option "prefix"/);
    expect(() => redisSession({ redis, secret: strong, timeout: 0 })).toThrow(/option "timeout"/);
    expect(() => redisSession({ redis, secret: [strong, ''] })).toThrow(/option "secret\[1\]"/);
    for (const [bad, kind] of [
      [0, RangeError],
      [1.5, RangeError],
      [-1, RangeError],
      [true, TypeError],
      ['10', TypeError],
    ] as const) {
      const make = () => redisSession({ redis, secret: strong, maxSessionsPerUser: bad as never });
      expect(make).toThrow(/option "maxSessionsPerUser" must be a whole number >= 1, or false/);
      expect(make).toThrow(kind);
    }
    expect(() => redisSession({ redis, secret: strong, cookie: { maxAge: 5 } as never })).toThrow(/use|ttl/);
    expect(() =>
      redisSession({ redis, secret: strong, cookie: { sameSite: 'none', secure: false } }),
    ).toThrow(/option "cookie.sameSite"/);
    // The cookie library takes it in any case: so does the check.
    expect(() =>
      redisSession({ redis, secret: strong, cookie: { sameSite: 'None' as 'none', secure: false } }),
    ).toThrow(/option "cookie.sameSite"/);
    // 'auto' is None over HTTPS: as refused with secure: false.
    expect(() =>
      redisSession({ redis, secret: strong, cookie: { sameSite: 'auto', secure: false } }),
    ).toThrow(/option "cookie.sameSite" is 'auto' while cookie.secure is false/);
    // The cookie library refuses any other value on every response; express-session reads 'auto' only so spelled.
    for (const bad of ['Auto', 'laxx', 1]) {
      expect(() => redisSession({ redis, secret: strong, cookie: { sameSite: bad as never } })).toThrow(
        /option "cookie.sameSite" is .*Use 'lax', 'strict', 'none', 'auto', true or false/,
      );
    }
    for (const good of ['Strict', 'LAX', true, false, 'auto'] as const) {
      expect(() =>
        redisSession({ redis, secret: strong, cookie: { sameSite: good as never } }),
      ).not.toThrow();
    }
    expect(() =>
      redisSession({ redis, secret: strong, cookie: { partitioned: true, secure: false } }),
    ).toThrow(/option "cookie.partitioned" is true while cookie.secure is false/);
  });

  it('refuses cookie settings that make browsers drop a __Host- or __Secure- cookie', () => {
    expect(() =>
      redisSession({ redis, secret: strong, name: '__Host-sid', cookie: { domain: 'a.com' } }),
    ).toThrow(/option "cookie.domain"/);
    expect(() =>
      redisSession({ redis, secret: strong, name: '__Host-sid', cookie: { path: '/app' } }),
    ).toThrow(/option "cookie.path"/);
    expect(() =>
      redisSession({ redis, secret: strong, name: '__Secure-sid', cookie: { secure: false } }),
    ).toThrow(/option "cookie.secure"/);
    expect(() =>
      redisSession({ redis, secret: strong, name: '__host-sid', cookie: { secure: false } }),
    ).toThrow(/option "cookie.secure"/);
    // On HTTPS, 'auto' sets Secure; a __Secure- cookie may name a domain.
    expect(() => redisSession({ redis, secret: strong, name: '__Host-sid' })).not.toThrow();
    expect(() =>
      redisSession({
        redis,
        secret: strong,
        name: '__Secure-sid',
        cookie: { domain: 'a.com', secure: true },
      }),
    ).not.toThrow();
  });

  it('returns a named middleware that carries the session helpers', () => {
    const sessions = redisSession({ redis, secret: strong });
    expect(sessions.name).toBe('redisSession');
    for (const helper of [
      'login',
      'logout',
      'logoutAll',
      'list',
      'revoke',
      'idOf',
      'handleErrors',
    ] as const) {
      expect(typeof sessions[helper]).toBe('function');
    }
  });
});
