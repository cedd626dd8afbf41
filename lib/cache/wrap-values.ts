import { toMs } from '../duration';
import { checkKnownOptions, optionError, shown } from '../errors';
import { type Entry, NEGATIVE_NULL, NEGATIVE_UNDEFINED } from './entry';
import type { Rec } from './l1';
import { WRAP_KNOWN } from './option-names';
import { isStringList } from './targets';
import type { Serializer, WrapOptions } from './types';

// What one cache.wrap() call caches and how: its options, and its value as an entry and back.

export interface ResolvedWrap<T> {
  ttlMs: number;
  swrMs: number;
  sieMs: number;
  nullMs: number;
  tags: string[];
  serializer: Serializer<T>;
}

const JSON_SERIALIZER: Serializer<unknown> = {
  serialize: (value) => JSON.stringify(value),
  deserialize: (raw) => JSON.parse(raw.toString('utf8')),
};

/** Checks and resolves a wrap() call's options. */
export function resolveWrap<T>(options: WrapOptions<T>): ResolvedWrap<T> {
  if (!options || typeof options !== 'object' || options.ttl === undefined) {
    throw optionError('ttl', 'is required for cache.wrap', "Pass { ttl: '10m' }.");
  }
  checkKnownOptions(options, WRAP_KNOWN, 'cache.wrap');
  const tags = options.tags ?? [];
  if (!isStringList(tags)) {
    throw optionError('tags', `must be an array of strings; got ${shown(options.tags)}`);
  }
  const serializer = options.serializer ?? (JSON_SERIALIZER as Serializer<T>);
  if (typeof serializer.serialize !== 'function' || typeof serializer.deserialize !== 'function') {
    throw optionError('serializer', 'must have serialize(value) and deserialize(buffer) functions');
  }
  return {
    ttlMs: toMs(options.ttl, 'ttl'),
    swrMs: toMs(options.staleWhileRevalidate ?? 0, 'staleWhileRevalidate', { allowZero: true }),
    sieMs: toMs(options.staleIfError ?? 0, 'staleIfError', { allowZero: true }),
    nullMs: toMs(options.cacheNullFor ?? 0, 'cacheNullFor', { allowZero: true }),
    tags,
    serializer,
  };
}

/** The entry to store for fn's value; undefined when it is not cached (null/undefined without cacheNullFor). */
export function toEntry<T>(value: T, o: ResolvedWrap<T>, jitter: (ms: number) => number): Entry | undefined {
  const negative = value === null ? NEGATIVE_NULL : value === undefined ? NEGATIVE_UNDEFINED : 0;
  if (negative && o.nullMs === 0) return undefined;
  let body: Buffer = Buffer.alloc(0);
  if (!negative) {
    const raw = o.serializer.serialize(value);
    if (typeof raw !== 'string' && !Buffer.isBuffer(raw)) {
      throw new TypeError('express-redis-kit: cache.wrap serializer must return a string or Buffer');
    }
    // A serializer may hand back the caller's own Buffer (`serialize: (b) => b`): the caller keeps
    // fn's value and may reuse it, so the entry (L1, and the Redis write still to come) needs a copy.
    body = Buffer.from(raw);
    // Read back once (JSON always reads what it wrote): a deserializer that refuses this value (a
    // schema check) would otherwise have every later call drop the entry as another serializer's.
    if (o.serializer !== JSON_SERIALIZER) {
      try {
        o.serializer.deserialize(body);
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        throw new TypeError(
          `express-redis-kit: cache.wrap serializer cannot read back what it wrote: ${reason}`,
        );
      }
    }
  }
  const freshMs = jitter(negative ? o.nullMs : o.ttlMs);
  const swrMs = negative ? 0 : o.swrMs;
  const sieMs = negative ? 0 : o.sieMs;
  return {
    status: 0,
    headers: [],
    body,
    etag: undefined,
    createdAt: Date.now(),
    ttlMs: freshMs + swrMs + sieMs,
    freshMs,
    swrMs,
    sieMs,
    tags: o.tags,
    negative,
  };
}

/** The value an entry holds, as this call's serializer reads it. */
export function decodeValue<T>(rec: Rec, o: ResolvedWrap<T>): T {
  const { entry } = rec;
  if (entry.negative === NEGATIVE_NULL) return null as T;
  if (entry.negative === NEGATIVE_UNDEFINED) return undefined as T;
  const value = o.serializer.deserialize(entry.body);
  // A deserializer that hands back the bytes it was given (`raw => raw`, or a view on them) would
  // give every hit the entry's own Buffer: one caller writing to it would change later hits.
  return ArrayBuffer.isView(value) && value.buffer === entry.body.buffer ? (copyOf(value) as T) : value;
}

/**
 * A caller's own copy of a value nothing was stored for (Redis down, or uncacheable), through the
 * serializer, so coalesced callers never share mutations.
 */
export function copyValue<T>(value: T, o: ResolvedWrap<T>): T {
  if (value === null || value === undefined) return value;
  try {
    const raw = o.serializer.serialize(value);
    if (typeof raw !== 'string' && !Buffer.isBuffer(raw)) return value;
    return o.serializer.deserialize(typeof raw === 'string' ? Buffer.from(raw) : raw);
  } catch {
    // A value the serializer cannot handle was returned uncached; it cannot be copied either, and
    // failing a caller that only waited would be worse than sharing it.
    return value;
  }
}

/** A copy of a Buffer, typed array or DataView, of the same kind. */
function copyOf(view: ArrayBufferView): ArrayBufferView {
  if (Buffer.isBuffer(view)) return Buffer.from(view);
  const bytes = view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength);
  if (view instanceof DataView) return new DataView(bytes);
  return new (view.constructor as new (bytes: ArrayBufferLike) => ArrayBufferView)(bytes);
}
