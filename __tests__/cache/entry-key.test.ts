import type { Request } from 'express';
import { CorruptEntryError, decodeEntry, type Entry, encodeEntry } from '../../lib/cache/entry';
import { defaultKey, normaliseQuery, parseVary } from '../../lib/cache/key';

const entry: Entry = {
  status: 200,
  headers: [['content-type', 'application/octet-stream']],
  body: Buffer.from([0, 1, 2, 255, 10, 13]),
  etag: '"abc"',
  createdAt: 1,
  ttlMs: 3000,
  freshMs: 1000,
  swrMs: 1000,
  sieMs: 1000,
  tags: ['t'],
  negative: 0,
};

describe('entry encoding', () => {
  it('round-trips status, headers, timestamps and a binary body', () => {
    expect(decodeEntry(encodeEntry(entry))).toEqual(entry);
  });

  it('round-trips the names of headers the route removed, and refuses one Node would not accept', () => {
    const withRemoved: Entry = { ...entry, removed: ['x-powered-by', 'cache-control'] };
    expect(decodeEntry(encodeEntry(withRemoved)).removed).toEqual(['x-powered-by', 'cache-control']);
    expect(() => decodeEntry(encodeEntry({ ...entry, removed: ['bad name'] }))).toThrow(CorruptEntryError);
  });

  it.each([
    ['truncated body', (b: Buffer) => b.subarray(0, b.length - 1)],
    ['extra bytes', (b: Buffer) => Buffer.concat([b, Buffer.from('x')])],
    ['truncated metadata', (b: Buffer) => b.subarray(0, 12)],
    ['wrong magic', (b: Buffer) => Buffer.concat([Buffer.from('XXXX'), b.subarray(4)])],
    ['empty', () => Buffer.alloc(0)],
  ])('rejects %s with CorruptEntryError', (_name, damage) => {
    expect(() => decodeEntry(damage(encodeEntry(entry)))).toThrow(CorruptEntryError);
  });
});

describe('cache keys', () => {
  const req = (method: string, url: string) => ({ method, originalUrl: url, url }) as Request;
  it('sorts query parameters, keeps repeated ones in order, and shares GET and HEAD', () => {
    expect(defaultKey(req('GET', '/a?b=2&a=1'))).toBe('GET /a?a=1&b=2');
    expect(defaultKey(req('HEAD', '/a?a=1&b=2'))).toBe('GET /a?a=1&b=2');
    expect(normaliseQuery('x=2&x=1')).toBe('?x=2&x=1');
    expect(normaliseQuery('q=a+b&r=%7E')).toBe('?q=a%20b&r=~');
    expect(defaultKey(req('GET', '/a?'))).toBe('GET /a');
  });

  it('keeps one array built from a, a[] and a[0] in request order, and sorts every other query as before', () => {
    // qs builds ['price', 'date'] from the first and ['date', 'price'] from the second.
    expect(normaliseQuery('sort=price&sort[]=date')).not.toBe(normaliseQuery('sort[]=date&sort=price'));
    expect(normaliseQuery('sort[]=x&b=1&sort=y')).toBe('?b=1&sort%5B%5D=x&sort=y');
    // One form per name: the full-name sort of earlier versions, so stored keys still match.
    expect(normaliseQuery('statusCode=200&status[]=open')).toBe('?status%5B%5D=open&statusCode=200');
    expect(normaliseQuery('a[1]=x&a[0]=y')).toBe('?a%5B0%5D=y&a%5B1%5D=x');
    expect(normaliseQuery('page[size]=10&page[number]=2')).toBe(
      normaliseQuery('page[number]=2&page[size]=10'),
    );
  });

  it('keeps request order under a root whose names qs merges by order: one name a path inside another, or a push form beside a sibling', () => {
    // qs: f is ["open", {"owner":"me"}] for the first, [{"owner":"me"}, "open"] for the second.
    expect(normaliseQuery('f=open&f[owner]=me')).not.toBe(normaliseQuery('f[owner]=me&f=open'));
    expect(normaliseQuery('a[b]=1&a[b][c]=2')).not.toBe(normaliseQuery('a[b][c]=2&a[b]=1'));
    expect(normaliseQuery('a[]=x&a[c]=y')).not.toBe(normaliseQuery('a[c]=y&a[]=x'));
    // Other roots still sort, and one root's names keep their place by its name.
    expect(normaliseQuery('z=1&f[owner]=me&f=open&b=2')).toBe('?b=2&f%5Bowner%5D=me&f=open&z=1');
    expect(normaliseQuery('a[0]=x&a[c]=y')).toBe(normaliseQuery('a[c]=y&a[0]=x'));
    // Queries qs builds the same in any order still share a key, the one earlier versions stored.
    expect(normaliseQuery('filter[status]=open&filter[date][gte]=2020')).toBe(
      '?filter%5Bdate%5D%5Bgte%5D=2020&filter%5Bstatus%5D=open',
    );
    expect(normaliseQuery('filter[date][gte]=2020&filter[status]=open')).toBe(
      '?filter%5Bdate%5D%5Bgte%5D=2020&filter%5Bstatus%5D=open',
    );
    expect(normaliseQuery('a[c][]=2&a[b][]=1')).toBe('?a%5Bb%5D%5B%5D=1&a%5Bc%5D%5B%5D=2');
  });

  it('keeps query text that does not decode as it came, so two different values never share a key', () => {
    // A lenient decoder makes both U+FFFD; qs (query parser 'extended') gives the app "%FFalice" and "%FEalice".
    expect(normaliseQuery('t=%FFalice')).not.toBe(normaliseQuery('t=%FEalice'));
    expect(normaliseQuery('t=%FFalice')).toBe('?t=%FFalice');
    expect(normaliseQuery('p=100%&a=1')).toBe('?a=1&p=100%');
    expect(normaliseQuery('&&a=1&&')).toBe('?a=1');
    expect(normaliseQuery('flag&a=')).toBe('?a=&flag=');
  });

  it('keeps literal = and ] in a value apart from encoded ones: qs splits a pair at ]= when it has one', () => {
    // qs: {"a":{"x=y":"1"}} for the first, {"a":{"[x":"y]=1"}} for the second.
    expect(normaliseQuery('a[x=y]=1')).not.toBe(normaliseQuery('a%5Bx=y%5D%3D1'));
    expect(normaliseQuery('a[x=y]=1')).toBe('?a%5Bx=y]=1');
    // Encodings that mean the same still match.
    expect(normaliseQuery('a[x=y%5D%3D1')).toBe(normaliseQuery('a%5Bx=y%5d%3d1'));
    expect(normaliseQuery('a=%7E]')).toBe('?a=~]');
  });

  it('keeps request order for a query of more than 64 bracketed names, or with one and more than 256 parts (checks a client could make every lookup pay for)', () => {
    const names = (n: number) => Array.from({ length: n }, (_, i) => `f[k${String(i).padStart(3, '0')}]=1`);
    const many = names(65);
    expect(normaliseQuery([...many].reverse().join('&'))).not.toBe(normaliseQuery(many.join('&')));
    expect(normaliseQuery([...many].reverse().join('&'))).toBe(
      `?${[...many].reverse().join('&').replaceAll('[', '%5B').replaceAll(']', '%5D')}`,
    );
    // One bracketed name among more than 256 parts: qs would parse the whole query twice.
    const plain = Array.from({ length: 256 }, (_, i) => `p${String(i).padStart(3, '0')}=1`);
    const long = ['f[a]=1', ...plain];
    expect(normaliseQuery([...long].reverse().join('&'))).not.toBe(normaliseQuery(long.join('&')));
    const shorter = ['f[a]=1', ...plain.slice(1)];
    expect(normaliseQuery([...shorter].reverse().join('&'))).toBe(normaliseQuery(shorter.join('&')));
    const few = names(64);
    expect(normaliseQuery([...few].reverse().join('&'))).toBe(normaliseQuery(few.join('&')));
    expect(defaultKey(req('GET', `http://x.example/a?${[...many].reverse().join('&')}`))).toBe(
      `GET /a${normaliseQuery([...many].reverse().join('&'))}`,
    );
  });

  it('parses Vary into sorted lower-case names', () => {
    expect(parseVary('Accept-Encoding, X-Lang')).toEqual(['accept-encoding', 'x-lang']);
    expect(parseVary(['origin', 'Origin'])).toEqual(['origin']);
    expect(parseVary('accept, *')).toEqual(['*']);
    expect(parseVary(undefined)).toEqual([]);
  });
});
