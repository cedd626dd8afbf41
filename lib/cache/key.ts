import type { IncomingHttpHeaders } from 'node:http';
import type { Request } from 'express';
import parseUrl from 'parseurl';
import { taggedKey } from '../keys';
import { QUERY_PARSER_LIMIT, sortQuery } from '../query-order';

/**
 * The request target as Express routes it: path and query. A request line may carry the absolute form
 * (`GET http://any.host/path`, RFC 9112 §3.2.2), which Express routes by the path parseurl finds in
 * it: kept whole in the key, every host name a client made up would be a new entry, and a new run of
 * the route. Read the same way as the router reads it, so a target the two would split differently
 * (`http://h%41/p`, `javascript://h/p`) can never put one path's answer under another's key.
 */
function targetOf(req: Request): string {
  const url = req.originalUrl ?? req.url;
  if (url.startsWith('/')) return url;
  const parsed = parseUrl.original(req);
  return parsed?.pathname ? `${parsed.pathname}${parsed.search ?? ''}` : url;
}

/**
 * Default cache key: `GET /path?a=1&b=2` with the query parameters sorted by name (repeated names keep
 * their order, since `?id=1&id=2` and `?id=2&id=1` may mean different lists). HEAD shares GET's key.
 */
export function defaultKey(req: Request): string {
  const method = req.method === 'HEAD' ? 'GET' : req.method;
  const url = targetOf(req);
  const q = url.indexOf('?');
  if (q === -1) return `${method} ${url}`;
  return `${method} ${url.slice(0, q)}${normaliseQuery(url.slice(q + 1))}`;
}

/**
 * Whether the request's query names a parameter outside `allowed` (compared by the name before any
 * `[`, decoded; one that does not decode is compared as sent).
 */
export function hasOtherParameters(req: Request, allowed: ReadonlySet<string>): boolean {
  const url = targetOf(req);
  const q = url.indexOf('?');
  if (q === -1) return false;
  for (const part of url.slice(q + 1).split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const raw = eq < 0 ? part : part.slice(0, eq);
    // One that does not decode is kept as sent: it matches no listed name unless listed so.
    const name = decodeQueryPart(raw) ?? raw;
    const bracket = name.indexOf('[');
    if (!allowed.has(bracket > 0 ? name.slice(0, bracket) : name)) return true;
  }
  return false;
}

/** `b=2&a=1&a=0` → `?a=1&a=0&b=2`; empty → ''. Encoding is normalised too (`%7E` and `~` match). */
export function normaliseQuery(query: string): string {
  if (query === '') return '';
  const parts = query.split('&');
  // Parsers read only the first parts of a longer query: which ones depends on their order (and on
  // empty parts), so such a query is its own key, as sent.
  if (parts.length > QUERY_PARSER_LIMIT) return `?${query}`;
  const pairs: Array<[string, string]> = [];
  for (const part of parts) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    pairs.push(
      eq < 0 ? [canonical(part), ''] : [canonical(part.slice(0, eq)), canonicalValue(part.slice(eq + 1))],
    );
  }
  if (pairs.length === 0) return '';
  const sorted = sortQuery(
    pairs,
    (pair) => pair[0],
    (pair) => `${pair[0]}=${pair[1]}`,
  );
  let out = '?';
  for (let i = 0; i < sorted.length; i++) {
    if (i > 0) out += '&';
    out += `${sorted[i]![0]}=${sorted[i]![1]}`;
  }
  return out;
}

/**
 * One name or value, decoded and encoded again; kept as it came when it does not decode (invalid
 * UTF-8, a lone `%`). A lenient decoder would turn every invalid byte into U+FFFD, so `%FF` and
 * `%FE` would share a key while a query parser such as `qs` hands the app two different values.
 */
function canonical(raw: string): string {
  const decoded = decodeQueryPart(raw);
  return decoded === undefined ? raw : encodeURIComponent(decoded);
}

/**
 * A value past the first `=`, with its literal `=` and `]` kept apart from encoded ones: `qs` (the
 * 'extended' query parser) splits a pair at `]=` when there is one, so `a[x=y]=1` is `{ a: { 'x=y': '1' } }`
 * while `a%5Bx=y%5D%3D1` is `{ a: { '[x': 'y]=1' } }`. Canonical pieces never hold either literally.
 */
function canonicalValue(raw: string): string {
  if (!raw.includes(']') && !raw.includes('=')) return canonical(raw);
  return raw
    .split(/([\]=])/)
    .map((piece) => (piece === ']' || piece === '=' ? piece : canonical(piece)))
    .join('');
}

/** A query name or value decoded (`+` is a space); undefined when it does not decode. */
function decodeQueryPart(raw: string): string | undefined {
  try {
    return decodeURIComponent(raw.replace(/\+/g, ' '));
  } catch {
    return undefined;
  }
}

/** One request header as it splits a cache key: absent → '', repeated → joined, whitespace trimmed. */
export function headerValue(headers: IncomingHttpHeaders, name: string): string {
  // Own properties only: a response may vary on any name, "constructor" included, and the headers
  // object inherits from Object.prototype.
  const value = Object.hasOwn(headers, name) ? headers[name] : undefined;
  if (typeof value === 'string') return value.trim();
  if (Array.isArray(value)) return value.join(',').trim();
  return '';
}

/** Appends the configured `vary` request headers to a key. */
export function withVary(key: string, headers: IncomingHttpHeaders, vary: readonly string[]): string {
  let out = key;
  for (const name of vary) out += `\n${name}: ${headerValue(headers, name)}`;
  return out;
}

/** Redis key of a response entry (or of the Vary marker in front of its variants). */
export function entryKey(prefix: string, key: string): string {
  return taggedKey(prefix, 'c', key);
}

/** Redis key of a `wrap()` value. */
export function valueKey(prefix: string, key: string): string {
  return taggedKey(prefix, 'w', key);
}

/** Redis key of the set of entries carrying one tag; each tag set lives in its own slot. */
export function tagKey(prefix: string, tag: string): string {
  return taggedKey(prefix, 't', tag);
}

/** The fill lock of an entry, in the entry's slot. */
export function lockKeyOf(entryRedisKey: string): string {
  return `${entryRedisKey}:lock`;
}

/**
 * Marks an entry as recently uncacheable (404, Set-Cookie, too large…), in the entry's slot: while it
 * lives, misses go to the origin at once instead of queueing on the fill lock one after another.
 */
export function noStoreKeyOf(entryRedisKey: string): string {
  return `${entryRedisKey}:nostore`;
}

/**
 * When the entry was last invalidated by key (Redis time, ms), in the entry's slot: a fill that runs
 * without the lock (the last fill was uncacheable, or it gave up waiting) and began before it must
 * not store what it read. A locked fill learns it by losing its lock.
 */
export function invalidatedKeyOf(entryRedisKey: string): string {
  return `${entryRedisKey}:inv`;
}

/**
 * Names from a response `Vary` header, lower-cased and sorted; `['*']` for `Vary: *`. The
 * list is what the store script keeps in the marker, so it must be canonical.
 */
export function parseVary(value: string | number | string[] | undefined): string[] {
  if (value === undefined) return [];
  const raw = Array.isArray(value) ? value.join(',') : String(value);
  const names = new Set<string>();
  for (const part of raw.split(',')) {
    const name = part.trim().toLowerCase();
    if (name) names.add(name);
  }
  if (names.has('*')) return ['*'];
  return [...names].sort();
}
