import { createHash } from 'node:crypto';
import type { Request } from 'express';
import Redis from 'ioredis';
import {
  canonicalJson,
  defaultFingerprint,
  type IdempotencyOptions,
  idempotency,
} from '../../lib/idempotency';
import { parseKey } from '../../lib/idempotency/request-key';

// Never connects: construction must not touch Redis.
const redis = new Redis({ lazyConnect: true });
afterAll(() => redis.disconnect());

const build = (extra: Partial<IdempotencyOptions>) => () =>
  idempotency({ redis, ...extra } as IdempotencyOptions);

describe('idempotency options', () => {
  it('returns a named middleware carrying the admin API and the resolved defaults', () => {
    const middleware = idempotency({ redis });
    expect(middleware.name).toBe('idempotencyMiddleware');
    expect(typeof middleware.forget).toBe('function');
    expect(middleware.options).toMatchObject({
      header: 'idempotency-key',
      required: false,
      ttlMs: 86_400_000,
      lockTtlMs: 30_000,
      heartbeatMs: 10_000,
      maxBodySize: 1_048_576,
      failMode: 'closed',
      timeoutMs: 500,
      retryAfterSeconds: 1,
      prefix: 'erk:',
    });
    expect([...middleware.options.methods]).toEqual(['POST', 'PATCH']);
    expect(middleware.options.shouldStore(201)).toBe(true);
    expect(middleware.options.shouldStore(499)).toBe(true);
    expect(middleware.options.shouldStore(500)).toBe(false);
  });

  it.each<[string, Partial<IdempotencyOptions>, RegExp, ErrorConstructor]>([
    ['redis', { redis: {} as never }, /option "redis"/, TypeError],
    ['scope', { scope: 'user' as never }, /option "scope"/, TypeError],
    ['header', { header: 'bad header' }, /option "header"/, TypeError],
    ['methods', { methods: [] }, /option "methods"/, TypeError],
    ['ttl', { ttl: 'soon' }, /option "ttl"/, TypeError],
    ['lockTtl', { lockTtl: 10 }, /option "lockTtl"/, RangeError],
    ['lockTtl above ttl', { ttl: '1m', lockTtl: '2m' }, /option "lockTtl".*ttl/, RangeError],
    ['storeStatuses out of range', { storeStatuses: [999] }, /option "storeStatuses" holds 999/, RangeError],
    [
      'storeStatuses not whole numbers',
      { storeStatuses: ['200' as never] },
      /option "storeStatuses"/,
      TypeError,
    ],
    ['maxBodySize', { maxBodySize: -1 }, /option "maxBodySize"/, RangeError],
    ['maxBodySize as a string', { maxBodySize: '1000' as never }, /option "maxBodySize"/, TypeError],
    [
      'maxBodySize above what Redis stores',
      { maxBodySize: 2 ** 30 },
      /option "maxBodySize".*512 MB/,
      RangeError,
    ],
    ['failMode', { failMode: 'sometimes' as never }, /option "failMode"/, TypeError],
    ['prefix', { prefix: 'a{b}' }, /option "prefix"/, TypeError],
    ['fingerprint', { fingerprint: 'sha' as never }, /option "fingerprint"/, TypeError],
    [
      'timeout above lockTtl / 4',
      { lockTtl: '1s', timeout: 300 },
      /option "timeout".*lockTtl \/ 4 \(250 ms\)/,
      RangeError,
    ],
  ])('rejects a bad %s at construction, naming the option', (_label, extra, message, type) => {
    expect(build(extra)).toThrow(type);
    expect(build(extra)).toThrow(message);
  });

  it('keeps the default timeout within lockTtl / 4 for a short lockTtl', () => {
    expect(idempotency({ redis, lockTtl: 300 }).options.timeoutMs).toBe(75);
    expect(idempotency({ redis, lockTtl: '2s' }).options.timeoutMs).toBe(500);
    expect(idempotency({ redis, lockTtl: '1s', timeout: 250 }).options.timeoutMs).toBe(250);
  });
});

describe('idempotency key parsing', () => {
  it('accepts 1–255 visible ASCII characters, bare or as a quoted structured-field string', () => {
    expect(parseKey('abc-123_~!')).toEqual({ ok: true, key: 'abc-123_~!' });
    expect(parseKey('"abc"')).toEqual({ ok: true, key: 'abc' });
    expect(parseKey('x'.repeat(255))).toEqual({ ok: true, key: 'x'.repeat(255) });
  });

  it('reads the quoted form as an RFC 8941 sf-string: escapes decoded, parameters ignored, unterminated refused', () => {
    expect(parseKey('"k";p=1')).toEqual({ ok: true, key: 'k' });
    expect(parseKey('"k"; a; b=?1;c="x;y"')).toEqual({ ok: true, key: 'k' });
    expect(parseKey('"a\\"b"')).toEqual({ ok: true, key: 'a"b' });
    expect(parseKey('"a\\\\b"')).toEqual({ ok: true, key: 'a\\b' });
    for (const bad of ['"abc', '"k"x', '"k";P=1', '"a\\qb"', '"a", "b"']) {
      expect(parseKey(bad)).toEqual({ ok: false, reason: 'malformed' });
    }
  });

  it('rejects empty, too long, spaces, control and non-ASCII characters, and repeated headers', () => {
    // A comma would hide a repeated header that a proxy joined with ",".
    for (const bad of ['', '""', 'x'.repeat(256), 'a b', 'a\tb', 'caf\u00e9', 'a, b', 'a,b']) {
      expect(parseKey(bad)).toEqual({ ok: false, reason: 'malformed' });
    }
    expect(parseKey(['a', 'b'])).toEqual({ ok: false, reason: 'malformed' });
    expect(parseKey(undefined)).toEqual({ ok: false, reason: 'missing' });
  });
});

describe('defaultFingerprint', () => {
  const app = (settings: Record<string, boolean> = {}) => ({ get: (name: string) => settings[name] });
  const req = (body: unknown, method = 'POST', originalUrl = '/orders?x=1', settings = {}, headers = {}) =>
    ({
      method,
      originalUrl,
      url: originalUrl,
      baseUrl: '',
      path: originalUrl.split('?')[0],
      app: app(settings),
      headers,
      body,
    }) as unknown as Request;

  // Records stored by earlier versions must still match after an upgrade: these were computed by
  // the version of 2026-11-28 (c0214c8). Queries that qs builds differently by order (their keys
  // changed on purpose) are not among them.
  it.each([
    ['b=2&a=1', '838205268e85d4d36ac6094d8e6fa35fa4f0559f56eae2718b371355304fc77d'],
    [
      'page[size]=10&page[number]=2&sort=-date',
      '3661f5a80d17667b05d9c9e241e4a820c4a07995ea8ae55bb5e0416903078cad',
    ],
    ['x%E9[=1&x%E8=2', '04ac4ddaac913e5787919a5e8256e57a8aaf9f8d5b7c005b5f365f01ead359e6'],
    ['a%FF[=1&a%FE=2', '4bd5e18e8ed14baf058407b5c5c351e127dcd15efa8c23a645b5ea38e84b570a'],
    ['q=a+b&q=%2B&&x', 'c25109d5f5828c1cabb7b6bb6c72adef8037d0e4f21994c1a4e18160629b12fe'],
    ['f[x]=1&f[y][z]=2', '27a3ca134db3c36b3b27ff7ec0aa5b67b2d17386f02bbfabfd9bd96d9e6f6ad4'],
  ])('fingerprints ?%s as earlier versions did', (query, expected) => {
    expect(defaultFingerprint(req({}, 'POST', `/orders?${query}`))).toBe(expected);
  });

  it('counts the query but not the order of its parameters, and the path as the router matches it', () => {
    const base = defaultFingerprint(req({}, 'POST', '/orders?amount=10&currency=eur'));
    expect(defaultFingerprint(req({}, 'POST', '/orders?currency=eur&amount=10'))).toBe(base);
    expect(defaultFingerprint(req({}, 'POST', '/orders?amount=1000&currency=eur'))).not.toBe(base);
    expect(defaultFingerprint(req({}, 'POST', '/orders'))).not.toBe(base);
    // Express routes /Orders/ to the same handler as /orders by default, but a Router made with
    // { caseSensitive, strict } may not, and from app.use() that cannot be seen: another request.
    expect(defaultFingerprint(req({}, 'POST', '/Orders/?amount=10&currency=eur'))).not.toBe(base);
    const strict = { 'case sensitive routing': true, 'strict routing': true };
    expect(defaultFingerprint(req({}, 'POST', '/Orders/?amount=10&currency=eur', strict))).not.toBe(
      defaultFingerprint(req({}, 'POST', '/orders?amount=10&currency=eur', strict)),
    );
  });

  /** What the previous version hashed `POST /orders?currency=eur&amount=10&note=a%20b+c` with body {} to. */
  const PINNED = '86da093f6ee32535ef82d3bc51052bcf60bc3b8a2e8cc29acbc8aa9e95f9d639';
  /** …and `POST /orders?q=50%`. */
  const PINNED_PERCENT = '2338f5bcf645235a01ceaa6442c9c112bf81701474a394a2ce5154fbcf959ae9';

  it('counts all of the query, past a second "?" and through escapes URLSearchParams cannot decode', () => {
    const at = (url: string) => defaultFingerprint(req({}, 'POST', url));
    expect(at('/transfer?to=alice&amount=10?memo=x')).not.toBe(at('/transfer?to=alice&amount=10?0'));
    expect(at('/transfer?to=%FFbob')).not.toBe(at('/transfer?to=%FEbob'));
    expect(at('/transfer?to=%FFbob')).toBe(at('/transfer?to=%FFbob'));
    // Everything else hashes as the previous version did: records it stored still match. A "%" that
    // starts no escape is read literally by every parser: not broken.
    expect(at('/orders?currency=eur&amount=10&note=a%20b+c')).toBe(PINNED);
    expect(at('/orders?q=50%')).toBe(PINNED_PERCENT);
  });

  it('ignores object key order but not values, arrays order, method or path', () => {
    expect(canonicalJson({ b: 1, a: { d: [2, 1], c: null } })).toBe('{"a":{"c":null,"d":[2,1]},"b":1}');
    const base = defaultFingerprint(req({ a: 1, b: 2 }));
    expect(defaultFingerprint(req({ b: 2, a: 1 }))).toBe(base);
    expect(defaultFingerprint(req({ a: 1, b: 3 }))).not.toBe(base);
    expect(defaultFingerprint(req({ a: 1, b: 2 }, 'PATCH'))).not.toBe(base);
    expect(defaultFingerprint(req({ a: 1, b: 2 }, 'POST', '/other'))).not.toBe(base);
    expect(defaultFingerprint(req([1, 2]))).not.toBe(defaultFingerprint(req([2, 1])));
  });

  it('hashes raw Buffer and string bodies as bytes, and tells them from JSON and from no body', () => {
    expect(defaultFingerprint(req(Buffer.from('hello')))).toBe(defaultFingerprint(req('hello')));
    expect(defaultFingerprint(req(Buffer.from('"hello"')))).not.toBe(defaultFingerprint(req({ hello: 1 })));
    expect(defaultFingerprint(req(undefined))).not.toBe(defaultFingerprint(req('')));
    expect(defaultFingerprint(req(undefined))).not.toBe(defaultFingerprint(req({})));
  });

  it('tells unread bodies apart by Content-Type and Content-Length; no body fingerprints as before', () => {
    const unread = (headers: Record<string, string>) =>
      defaultFingerprint(req(undefined, 'POST', '/o', {}, headers));
    const text5 = unread({ 'content-type': 'text/plain', 'content-length': '5' });
    expect(unread({ 'content-type': 'text/plain', 'content-length': '6' })).not.toBe(text5);
    expect(unread({ 'content-type': 'application/xml', 'content-length': '5' })).not.toBe(text5);
    expect(unread({ 'content-type': 'text/plain', 'transfer-encoding': 'chunked' })).not.toBe(text5);
    expect(unread({ 'content-type': 'Text/Plain', 'content-length': '5' })).toBe(text5);
    // Chunked is the same unknown length as an HTTP/2 body sent without Content-Length.
    expect(unread({ 'content-type': 'text/plain', 'transfer-encoding': 'gzip, chunked' })).toBe(
      unread({ 'content-type': 'text/plain', 'transfer-encoding': 'chunked' }),
    );
    // Records stored by earlier versions (plain "none") still match a retry without a body.
    expect(unread({ 'content-length': '0' })).toBe(unread({}));
    expect(unread({})).toBe(
      createHash('sha256')
        .update('POST')
        .update('\0')
        .update('/o')
        .update('\0')
        .update('')
        .update('\0')
        .update('none')
        .digest('hex'),
    );
  });
});
