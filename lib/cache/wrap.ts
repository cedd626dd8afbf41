import { MAX_TIMER_MS } from '../duration';
import { type Acquired, CacheCore } from './core';
import { CorruptEntryError, type Entry } from './entry';
import { within } from './flights';
import { valueKey } from './key';
import { isRec, type Rec, toRec } from './l1';
import { resolveCacheOptions } from './options';
import { unlinkKeys } from './store';
import { checkInvalidateTarget, type InvalidateTarget } from './targets';
import type { CreateCacheOptions, WrapOptions } from './types';
import { reportUnserializable, WrapRefresher } from './wrap-refresh';
import { copyValue, decodeValue, type ResolvedWrap, resolveWrap, toEntry } from './wrap-values';

export type { InvalidateTarget } from './targets';

interface Flight {
  value: unknown;
  rec: Rec | undefined;
  /** The store was dropped (an invalidation, a newer entry, too late, or a caller gave up): look again. */
  dropped?: boolean;
}

/**
 * A Redis cache with an optional in-process L1, shared by `wrap()` calls and `cacheResponse()`
 * middlewares. This file is wrap()'s way through a call (L1, in-process flights, fill); the background
 * refresh of a stale value is wrap-refresh.ts; what a call caches and how (options, entries, copies
 * of values) is wrap-values.ts.
 */
export class Cache extends CacheCore {
  private readonly valueFlights = new Map<
    string,
    { flight: Promise<Flight>; heard: number; lease: { abandon?: () => void } }
  >();
  /** staleWhileRevalidate: background refreshes of stale values (wrap-refresh.ts). */
  private readonly refresher = new WrapRefresher(this);

  /**
   * Returns the cached value of `key`, or runs `fn` once (across concurrent callers in this process
   * and, through a Redis lock, in every process) and caches its result. `null`/`undefined` results
   * are cached only with `cacheNullFor`. Errors of `fn` are never cached. When Redis is down or slow,
   * `fn` runs directly.
   */
  async wrap<T>(key: string, fn: () => T | Promise<T>, options: WrapOptions<T>): Promise<T> {
    if (typeof key !== 'string' || key === '')
      throw new TypeError('express-redis-kit: cache.wrap needs a string key');
    if (typeof fn !== 'function')
      throw new TypeError('express-redis-kit: cache.wrap needs a function to cache');
    const o = resolveWrap(options);
    return this.read(valueKey(this.options.prefix, key), fn, o, true);
  }

  private async read<T>(
    redisKey: string,
    fn: () => T | Promise<T>,
    o: ResolvedWrap<T>,
    again: boolean,
  ): Promise<T> {
    const now = Date.now();
    const cached = this.l1?.get(redisKey, now);
    let local = cached && isRec(cached) ? cached : undefined;
    if (local && now < local.swrUntil) {
      const read = this.readable(redisKey, local, o, false);
      if (read) {
        if (now < local.freshUntil) {
          this.event('l1-hit', { key: redisKey });
          return read.value;
        }
        this.event('stale', { key: redisKey });
        this.refresher.start(redisKey, fn, o, local, true);
        return read.value;
      }
      // Another call's serializer wrote it (one key, two serializers): no copy, nor a fallback.
      local = undefined;
    }
    let open = this.valueFlights.get(redisKey);
    const leader = !open;
    if (!open) {
      const lease: { abandon?: () => void } = {};
      const created = this.fill(redisKey, fn, o, local, lease);
      open = { flight: created, heard: this.heard, lease };
      this.valueFlights.set(redisKey, open);
      const forget = () => {
        if (this.valueFlights.get(redisKey)?.flight === created) this.valueFlights.delete(redisKey);
      };
      created.then(forget, forget);
    }
    // The leader gets fn's own value; coalesced callers get their own copy, so nobody shares mutations.
    if (leader) return (await open.flight).value as T;
    const result = await within(open.flight, 3 * this.options.lockTimeoutMs);
    if (!result) {
      // An fn that never settles (a call on a dead socket) must not hold every later caller with it:
      // past the wait a caller in another process would give up after, this one runs fn itself, and
      // the next call opens a flight of its own (one that fills the cache). The hung fill gives up
      // its lock, so that flight takes it at once, and the hung one's late value is not stored over it.
      if (this.valueFlights.get(redisKey) === open) {
        this.valueFlights.delete(redisKey);
        open.lease.abandon?.();
      }
      return fn();
    }
    // Read afresh, once (rather than for ever under a stream of invalidations), when an invalidation
    // took the fill's lock while fn ran (what it read may be older than the write behind it), or
    // this instance heard one after that read began that reaches what it read.
    const overtaken = result.dropped || (result.rec && this.invalidatedSince(open.heard, result.rec));
    if (again && overtaken) return this.read(redisKey, fn, o, false);
    const stored = result.rec && this.readable(redisKey, result.rec, o, false);
    if (stored) return stored.value;
    // Nothing was stored (Redis down, or an uncacheable value): a copy of fn's value.
    return copyValue(result.value as T, o);
  }

  /** Deletes entries by tag and/or key in Redis and in every instance's L1. */
  async invalidate(target: InvalidateTarget): Promise<void> {
    const { tags, keys } = checkInvalidateTarget(target);
    await this.invalidateRedis(this.redisKeysOf(keys), tags);
  }

  /**
   * `lease.abandon`, set while fn runs: stops renewing the fill lock, releases it, and keeps fn's
   * value out of the cache (a caller gave up on this fill, and another may have stored since).
   */
  private async fill<T>(
    redisKey: string,
    fn: () => T | Promise<T>,
    o: ResolvedWrap<T>,
    local: Rec | undefined,
    lease: { abandon?: () => void } = {},
  ) {
    // Given up on (a caller waited 3 × lockTimeout; it may be while the lookup still waits on another
    // process's lock): what fn returns may be older than what another flight stored since, and a
    // fill without the lock has no lock whose loss would drop its store, so it stores nothing.
    let abandoned = false;
    lease.abandon = () => {
      abandoned = true;
    };
    // Read before the lookup: an invalidation while it is in flight must keep its answer out of L1.
    const heard = this.heard;
    let acquired: Acquired = await this.acquire(redisKey, undefined);
    for (let looks = 1; acquired.kind === 'hit'; looks++) {
      const { rec } = acquired;
      const read = this.readable(redisKey, rec, o, true);
      if (!read) {
        // Dropped: its UNLINK goes out ahead of the next lookup on the same connection, which so
        // fills it under the lock. One that comes back unreadable at once (an instance on the other
        // serializer keeps writing it) is not looked up for ever: fn's value, uncached.
        if (looks === 2) {
          this.event('miss', { key: redisKey });
          return { value: await fn(), rec: undefined };
        }
        acquired = await this.acquire(redisKey, undefined);
        continue;
      }
      const now = Date.now();
      this.l1?.set(redisKey, rec, now, heard);
      if (now < rec.freshUntil) this.event('hit', { key: redisKey });
      else {
        this.event('stale', { key: redisKey });
        this.refresher.start(redisKey, fn, o, rec);
      }
      return { value: read.value, rec };
    }
    if (acquired.kind === 'bypass') {
      // Not read before Redis while its invalidation channel is down; Redis cannot answer either:
      // what L1 holds is served as usual, as the fail mode says.
      const now = Date.now();
      const found = !local && this.l1?.isDeaf ? this.l1.get(redisKey, now, true) : undefined;
      let kept = found && isRec(found) ? found : local;
      if (found && kept === found && now < found.swrUntil) {
        const read = this.readable(redisKey, found, o, false);
        if (read) {
          // A stale one is not refreshed now: Redis has just failed (the next read after it is back does).
          this.event(now < found.freshUntil ? 'l1-hit' : 'stale', { key: redisKey });
          return { value: read.value, rec: found };
        }
        // Dropped: no stale-if-error fallback either (nor reported twice).
        kept = local;
      }
      this.event('bypass', { key: redisKey, reason: 'redis', error: acquired.error as Error });
      try {
        return { value: await fn(), rec: undefined };
      } catch (error) {
        // Redis being down is when the L1 copy matters most.
        const stale = this.staleIfError(redisKey, kept, error, o, false);
        if (stale) return stale;
        throw error;
      }
    }
    this.event('miss', { key: redisKey });
    // What an invalidation heard since the lookup began reaches is no fallback (L1's copy was read
    // before it, and the entry a poll found may have been invalidated while fn ran).
    const usable = (rec: Rec | undefined) => (rec && !this.invalidatedSince(heard, rec) ? rec : undefined);
    if (abandoned) this.releaseFill(redisKey, acquired.token);
    const stop = abandoned ? () => {} : this.holdLock(redisKey, acquired.token);
    // As a refresh does: past the wait every caller gives up after, the lock goes, so that an fn that
    // never settles (and no caller here giving up on it) does not keep every other instance's misses
    // waiting for ever. A value that still comes is stored without the lock (see below).
    let held = acquired.token;
    let letGo: ReturnType<typeof setTimeout> | undefined;
    lease.abandon = () => {
      abandoned = true;
      clearTimeout(letGo);
      stop();
      this.releaseFill(redisKey, acquired.token);
    };
    if (held && !abandoned) {
      letGo = setTimeout(
        () => {
          held = '';
          stop();
          this.releaseFill(redisKey, acquired.token);
          this.event('fill-slow', { key: redisKey });
        },
        Math.min(3 * this.options.lockTimeoutMs, MAX_TIMER_MS),
      );
      letGo.unref?.();
    }
    let value: T;
    try {
      value = await fn();
    } catch (error) {
      lease.abandon = undefined;
      stop();
      const fallback = newest(usable(acquired.stale), usable(local));
      // The entry the lookup found is still what Redis holds only while the lock is held (after the
      // let-go or an abandon, another fill may have stored a newer one): dropped before it goes.
      const stillInRedis = held !== '' && !abandoned && fallback === acquired.stale;
      const stale = this.staleIfError(redisKey, fallback, error, o, stillInRedis);
      this.releaseFill(redisKey, acquired.token);
      if (stale) return stale;
      throw error;
    } finally {
      clearTimeout(letGo);
    }
    // From here the value is the newest there is: a caller giving up now must not cost its store.
    lease.abandon = undefined;
    stop();
    if (abandoned) return { value, rec: undefined, dropped: true };
    let entry: Entry | undefined;
    try {
      entry = toEntry(value, o, (ms) => this.jittered(ms));
    } catch (error) {
      // fn did its work; only caching failed. The marker spares waiters in other processes a queue of
      // fills that would all fail the same way.
      this.releaseUncacheable(redisKey, acquired.token);
      reportUnserializable(this, redisKey, error);
      return { value, rec: undefined };
    }
    if (!entry) {
      this.releaseUncacheable(redisKey, acquired.token);
      return { value, rec: undefined };
    }
    // After the let-go, only where the key still holds what the lookup found: another instance may
    // have filled it since, from newer data.
    const replaces =
      held || !acquired.token ? undefined : (acquired.stale?.entry.createdAt ?? ('none' as const));
    const stored = await this.store(redisKey, entry, held, undefined, acquired.since, replaces);
    const rec = toRec(entry, redisKey, 0, Date.now());
    if (stored === 'stored') this.l1?.set(redisKey, rec, Date.now(), heard);
    return { value, rec, dropped: stored === 'dropped' };
  }

  /**
   * The stale-if-error answer from `fallback`, if it is still within that window. `inRedis`: it is
   * the entry this fill's lookup found in Redis (not an L1 copy).
   */
  private staleIfError<T>(
    redisKey: string,
    fallback: Rec | undefined,
    error: unknown,
    o: ResolvedWrap<T>,
    inRedis: boolean,
  ): Flight | undefined {
    if (!fallback || Date.now() >= fallback.expiresAt || fallback.entry.sieMs <= 0) return undefined;
    const read = this.readable(redisKey, fallback, o, inRedis);
    if (!read) return undefined;
    this.event('stale-if-error', { key: redisKey, error: error as Error });
    return { value: read.value, rec: fallback };
  }

  /**
   * `rec`'s value as this call's serializer reads it; undefined when it cannot. Such an entry was
   * written through another serializer: an instance on other options during a rolling deploy, or
   * before a deploy that changed `serializer`. Rejecting every call on the key until its `ttl` would
   * turn a deploy into errors, so, as with a corrupt entry, it is dropped, logged and reported as
   * `corrupt`, and the caller does without it. It leaves L1; it leaves Redis only with `inRedis`
   * (what a lookup just found there, or a failed fill's still under its lock): an L1 copy may be
   * older than what Redis holds now, another instance's readable entry.
   */
  private readable<T>(
    redisKey: string,
    rec: Rec,
    o: ResolvedWrap<T>,
    inRedis: boolean,
  ): { value: T } | undefined {
    try {
      return { value: decodeValue(rec, o) };
    } catch (cause) {
      const reason = cause instanceof Error ? cause.message : String(cause);
      const error = new CorruptEntryError(`the serializer cannot read it: ${reason}`);
      this.l1?.delete(redisKey);
      this.options.logger.warn(
        { key: redisKey, reason: error.message },
        'deleted a cache entry the serializer cannot read (served as a miss)',
      );
      this.event('corrupt', { key: redisKey, error });
      if (inRedis) this.call(redisKey, () => unlinkKeys(this.redis, [redisKey])).catch(() => {});
      return undefined;
    }
  }
}

/** Creates a cache: `wrap()` for function results, shareable by `cacheResponse({ cache })` middlewares. */
export function createCache(options: CreateCacheOptions): Cache {
  return new Cache(resolveCacheOptions(options));
}

function newest(a: Rec | undefined, b: Rec | undefined): Rec | undefined {
  if (!a) return b;
  if (!b) return a;
  return a.bornAt >= b.bornAt ? a : b;
}
