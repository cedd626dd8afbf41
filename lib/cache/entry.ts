/**
 * Binary-safe encoding of a cache entry: `ERK1` | u32 meta length | meta JSON | body bytes.
 * The body stays raw bytes (no base64), and every length is checked on the way back, so a truncated
 * or foreign value is detected instead of being served.
 */

import { isKitError } from '../errors';

const MAGIC = Buffer.from('ERK1');
const HEADER_BYTES = MAGIC.length + 4;

/** Marks a negative result cached by `wrap()`. */
export const NEGATIVE_NULL = 1;
export const NEGATIVE_UNDEFINED = 2;

export interface Entry {
  /** HTTP status (0 for `wrap()` values). */
  status: number;
  /** A reason phrase other than the standard one for `status`, sent again on hits. */
  message?: string | undefined;
  /** Stored response headers, lower-case names. */
  headers: Array<[string, string]>;
  body: Buffer;
  etag: string | undefined;
  /** When it was written (writer's clock; informative — freshness uses Redis' own TTL). */
  createdAt: number;
  /** Whole Redis lifetime: fresh + stale-while-revalidate + stale-if-error. */
  ttlMs: number;
  freshMs: number;
  swrMs: number;
  sieMs: number;
  tags: string[];
  /** 0, or NEGATIVE_NULL / NEGATIVE_UNDEFINED for cached negative `wrap()` results. */
  negative: number;
  /**
   * Seconds old the response already was when the route sent it (its `Age`, relayed from an upstream
   * cache): hits add their own time in the cache to it, so downstream caches never see it younger.
   */
  originAge?: number | undefined;
  /** Headers that middleware in front of the cache set and the route removed: hits remove them too. */
  removed?: string[] | undefined;
}

interface Meta {
  v: 1;
  s: number;
  h: Array<[string, string]>;
  e?: string;
  c: number;
  t: number;
  f: number;
  w: number;
  i: number;
  g: string[];
  n?: number;
  a?: number;
  /** Removed headers; versions before it ignore the field (and leave those headers on hits). */
  r?: string[];
  /** The reason phrase, when not the standard one; versions before it ignore the field. */
  m?: string;
  b: number;
}

const CORRUPT_ENTRY: ReadonlySet<string> = new Set(['ERK_CACHE_CORRUPT']);

/** Raised for a value that is not a well-formed entry. */
export class CorruptEntryError extends Error {
  static override [Symbol.hasInstance](value: unknown): boolean {
    return isKitError(CorruptEntryError, value, CORRUPT_ENTRY);
  }
  readonly code = 'ERK_CACHE_CORRUPT';
  constructor(reason: string) {
    super(`corrupt cache entry: ${reason}`);
    this.name = 'CorruptEntryError';
  }
}

export function encodeEntry(entry: Entry): Buffer {
  const meta: Meta = {
    v: 1,
    s: entry.status,
    h: entry.headers,
    // Right after "h": the store script finds it there as text (store.ts, STORE).
    c: entry.createdAt,
    t: entry.ttlMs,
    f: entry.freshMs,
    w: entry.swrMs,
    i: entry.sieMs,
    g: entry.tags,
    b: entry.body.length,
  };
  if (entry.etag !== undefined) meta.e = entry.etag;
  if (entry.negative) meta.n = entry.negative;
  if (entry.originAge) meta.a = entry.originAge;
  if (entry.removed && entry.removed.length > 0) meta.r = entry.removed;
  if (entry.message) meta.m = entry.message;
  const json = Buffer.from(JSON.stringify(meta));
  const head = Buffer.allocUnsafe(HEADER_BYTES);
  MAGIC.copy(head, 0);
  head.writeUInt32BE(json.length, MAGIC.length);
  return Buffer.concat([head, json, entry.body]);
}

/** Decodes an entry; throws {@link CorruptEntryError} for anything malformed or truncated. */
export function decodeEntry(raw: Buffer): Entry {
  if (!Buffer.isBuffer(raw) || raw.length < HEADER_BYTES) throw new CorruptEntryError('too short');
  if (raw.compare(MAGIC, 0, MAGIC.length, 0, MAGIC.length) !== 0) throw new CorruptEntryError('bad magic');
  const metaLength = raw.readUInt32BE(MAGIC.length);
  if (HEADER_BYTES + metaLength > raw.length) throw new CorruptEntryError('truncated metadata');
  let meta: Meta;
  try {
    meta = JSON.parse(raw.toString('utf8', HEADER_BYTES, HEADER_BYTES + metaLength)) as Meta;
  } catch {
    throw new CorruptEntryError('unreadable metadata');
  }
  const body = raw.subarray(HEADER_BYTES + metaLength);
  if (!isMeta(meta)) throw new CorruptEntryError('unexpected metadata');
  if (body.length !== meta.b) throw new CorruptEntryError(`body is ${body.length} bytes, expected ${meta.b}`);
  return {
    status: meta.s,
    headers: meta.h,
    body,
    etag: meta.e,
    createdAt: meta.c,
    ttlMs: meta.t,
    freshMs: meta.f,
    swrMs: meta.w,
    sieMs: meta.i,
    tags: meta.g,
    negative: meta.n ?? 0,
    originAge: meta.a,
    removed: meta.r,
    ...(meta.m ? { message: meta.m } : {}),
  };
}

// What Node accepts in a header name and value: anything else would make every hit throw (a 500)
// instead of counting as the corrupt entry it is.
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

function isMeta(m: unknown): m is Meta {
  const meta = m as Meta;
  return (
    typeof meta === 'object' &&
    meta !== null &&
    meta.v === 1 &&
    Number.isInteger(meta.s) &&
    // 0: a wrap() value, not a response.
    (meta.s === 0 || (meta.s >= 200 && meta.s <= 599)) &&
    Array.isArray(meta.h) &&
    meta.h.every(
      (p) =>
        Array.isArray(p) &&
        typeof p[0] === 'string' &&
        typeof p[1] === 'string' &&
        HEADER_NAME.test(p[0]) &&
        HEADER_VALUE.test(p[1]),
    ) &&
    (meta.e === undefined || typeof meta.e === 'string') &&
    (meta.m === undefined || (typeof meta.m === 'string' && HEADER_VALUE.test(meta.m))) &&
    (meta.a === undefined || (Number.isInteger(meta.a) && meta.a >= 0)) &&
    (meta.r === undefined ||
      (Array.isArray(meta.r) && meta.r.every((n) => typeof n === 'string' && HEADER_NAME.test(n)))) &&
    [meta.c, meta.t, meta.f, meta.w, meta.i, meta.b].every((n) => typeof n === 'number' && n >= 0) &&
    Array.isArray(meta.g) &&
    meta.g.every((t) => typeof t === 'string')
  );
}
