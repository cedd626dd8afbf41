import type { IncomingHttpHeaders } from 'node:http';
import type { RedisClient } from '../client';
import { emitKitEvent, hasKitListeners } from '../events';
import { type GuardOptions, guarded } from '../guarded';
import { newToken } from '../token';
import { KIT_VERSION } from '../version';
import type { Bus } from './bus';
import { Coherence } from './coherence';
import { CorruptEntryError, decodeEntry, type Entry } from './entry';
import { type FillVary, type StoreOutcome, storeFill } from './fill-store';
import { invalidateRedis, redisKeysOf } from './invalidate';
import { headerValue, lockKeyOf, noStoreKeyOf } from './key';
import { type L1, type Rec, toRec } from './l1';
import { acquireLockAt, keepAlive, mayTakeLock, releaseLock, sleep } from './lock';
import type { ResolvedCacheOptions } from './options';
import { lookup, markNoStore, type Replaces, unlinkKeys, type VaryMarker } from './store';

export type Fetched =
  | { kind: 'hit'; rec: Rec; key: string }
  /** `now`: Redis time of the lookup, when known. */
  | { kind: 'miss'; locked: boolean; noStore: boolean; now?: number; marker?: VaryMarker | null }
  | { kind: 'corrupt' };

/**
 * The right to run the origin and store: `token` owns the fill lock ('' when none is held); `stale`,
 * an entry past its time that stale-if-error may still serve; `since`, the Redis time of the lookup
 * that found the miss (the store skips tags invalidated after it); `marker`, the Vary marker it
 * passed through, whose generation the store reuses (null: it found none; undefined: not known, as
 * for a background refresh).
 */
export interface FillLease {
  token: string;
  stale?: Rec;
  since?: number;
  marker?: VaryMarker | null;
}

/** Outcome of waiting for an entry on a miss. */
export type Acquired =
  | { kind: 'hit'; rec: Rec }
  | ({ kind: 'fill' } & FillLease)
  | { kind: 'bypass'; error: unknown };

const MAX_LEARNED_VARY = 32;
/** Longest life of the no-store marker an uncacheable fill leaves (capped by `lockTimeout`). */
const NO_STORE_MS = 2000;

/** Marks a cache, so another copy of the kit (see version.ts) can tell one of the same version. */
export const CACHE_BRAND = Symbol.for('express-redis-kit.cache');

/** A cache made by createCache() of this copy, or of another copy of the same version. */
export function isKitCache(value: unknown): boolean {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as Record<symbol, unknown>)[CACHE_BRAND] === KIT_VERSION
  );
}

/**
 * The machinery shared by `wrap()` and `cacheResponse()`: one-round-trip lookups, stores with tags,
 * single-flight fills and invalidation. L1 and the invalidation bus are in coherence.ts.
 */
export class CacheCore {
  readonly l1: L1 | undefined;
  protected readonly bus: Bus;
  /** L1, the invalidation bus and the invalidations heard (coherence.ts). */
  private readonly coherence: Coherence;
  protected readonly guard: GuardOptions;
  /** Request headers that some response varied on; sent with lookups so Vary costs no extra trip. */
  private readonly learnedVary = new Set<string>(['accept-encoding']);
  private readonly clientPrefix: string;

  constructor(readonly options: ResolvedCacheOptions) {
    Object.defineProperty(this, CACHE_BRAND, { value: KIT_VERSION });
    const { redis } = options;
    this.guard = { timeoutMs: options.timeoutMs, component: 'cache', name: options.name };
    this.clientPrefix = (redis.options as { keyPrefix?: string }).keyPrefix ?? '';
    this.coherence = new Coherence(redis, options);
    this.l1 = this.coherence.l1;
    this.bus = this.coherence.bus;
  }

  get redis(): RedisClient {
    return this.options.redis;
  }

  /**
   * Resolves once the invalidation bus is subscribed (L1 coherence is live). While Redis is
   * unreachable it stays pending (the subscription is retried) and the L1 is not used.
   */
  ready(): Promise<void> {
    return this.bus.ready;
  }

  event(type: string, details?: Record<string, unknown>): void {
    if (hasKitListeners()) emitKitEvent({ component: 'cache', type, name: this.options.name, ...details });
  }

  /** One guarded Redis call on `key` (on a Cluster, that key's node's breaker). */
  call<T>(key: string, operation: () => Promise<T>): Promise<T> {
    const answer = guarded(this.redis, operation, { ...this.guard, key });
    const l1 = this.l1;
    if (!l1?.isDeaf) return answer;
    return answer.then((value) => {
      l1.redisAnswered();
      return value;
    });
  }

  /** Lookup pairs for the headers responses were seen to vary on, plus `extra` names. */
  private pairsFor(headers: IncomingHttpHeaders | undefined, extra: readonly string[] = []): string[] {
    if (!headers) return [];
    const pairs: string[] = [];
    for (const name of this.learnedVary) pairs.push(name, headerValue(headers, name));
    for (const name of extra) if (!this.learnedVary.has(name)) pairs.push(name, headerValue(headers, name));
    return pairs;
  }

  learnVary(names: readonly string[]): void {
    for (const name of names) {
      if (this.learnedVary.size >= MAX_LEARNED_VARY) return;
      this.learnedVary.add(name);
    }
  }

  /**
   * The entry in Redis when it is still fresh, looked up without the lock: a stale L1 copy's refresh
   * takes it instead of running the origin (or `fn`) again when another instance refreshed already.
   */
  async freshInRedis(redisKey: string, headers: IncomingHttpHeaders | undefined): Promise<Rec | undefined> {
    const found = await this.fetch(redisKey, headers, '');
    return found.kind === 'hit' && Date.now() < found.rec.freshUntil ? found.rec : undefined;
  }

  /** One round trip (two the first time a process meets a new Vary header). Rejects when Redis is sick. */
  async fetch(redisKey: string, headers: IncomingHttpHeaders | undefined, token: string): Promise<Fetched> {
    // Names the marker asked for: sent on the retry even when the learned set is full.
    let asked: readonly string[] = [];
    for (let attempt = 0; attempt < 2; attempt++) {
      const pairs = this.pairsFor(headers, asked);
      const send = () =>
        lookup(
          this.redis,
          redisKey,
          lockKeyOf(redisKey),
          noStoreKeyOf(redisKey),
          token,
          this.options.lockTimeoutMs,
          pairs,
        );
      // With a token the lookup may take the fill lock: one that times out must not leave it orphaned.
      const reply = await (token
        ? mayTakeLock(this.redis, lockKeyOf(redisKey), token, (op) => this.call(redisKey, op), send)
        : this.call(redisKey, send));
      if (reply.kind === 'vary') {
        this.learnVary(reply.names);
        asked = reply.names;
        continue;
      }
      if (reply.kind === 'miss') return reply;
      const key = this.strip(reply.key);
      try {
        const entry = decodeEntry(reply.raw);
        const elapsed = reply.pttl < 0 ? entry.ttlMs : entry.ttlMs - reply.pttl;
        return { kind: 'hit', rec: toRec(entry, redisKey, elapsed, Date.now()), key };
      } catch (error) {
        if (!(error instanceof CorruptEntryError)) throw error;
        this.options.logger.warn(
          { key, reason: error.message },
          'deleted a corrupt cache entry (served as a miss)',
        );
        this.event('corrupt', { key, error });
        this.call(key, () => unlinkKeys(this.redis, [key])).catch(() => {});
        return { kind: 'corrupt' };
      }
    }
    return { kind: 'miss', locked: false, noStore: false };
  }

  /**
   * On a miss: returns a usable entry, or the right to fill (holding the cross-process lock), waiting
   * while another process fills. If that process dies its lock expires after `lockTimeout` and the
   * next poll here takes it over. `serveStale`: a stale entry within staleWhileRevalidate is a hit
   * (false: it is filled afresh, for requests a background refresh cannot replay).
   */
  async acquire(
    redisKey: string,
    headers: IncomingHttpHeaders | undefined,
    serveStale = true,
  ): Promise<Acquired> {
    const token = newToken();
    // Monotonic, like every wait: a wall clock stepped back would stretch it by the step.
    const giveUpAt = performance.now() + 3 * this.options.lockTimeoutMs;
    let delay = 5;
    let stale: Rec | undefined;
    // Redis time of the last look: a fill that gives up waiting checks invalidations since then.
    let lastNow: number | undefined;
    let waited = false;
    let corrupt = 0;
    try {
      for (;;) {
        const found = await this.fetch(redisKey, headers, token);
        if (found.kind === 'hit') {
          if (Date.now() < (serveStale ? found.rec.swrUntil : found.rec.freshUntil))
            return { kind: 'hit', rec: found.rec };
          // Only good as a stale-if-error fallback: fill it, under the lock.
          stale = found.rec;
          const lock = await this.tryLockAt(redisKey, token, found.key);
          // Gone by then: an invalidation ran between the two round trips, so it is no fallback.
          if (lock.taken)
            return { kind: 'fill', token, stale: lock.entryGone ? undefined : stale, since: lock.at };
          lastNow = lock.at;
        } else if (found.kind === 'corrupt') {
          // Its UNLINK went out ahead of the next lookup on the same connection: look again, and
          // fill under the lock like any miss. A value that comes back corrupt at once (something
          // else keeps writing it) is filled without, rather than looked up for ever.
          if (++corrupt === 1) continue;
          return { kind: 'fill', token: '', stale: undefined };
        } else {
          // What an earlier look found is gone (invalidated, or past its time): no fallback any more,
          // nor what a late store of this fill may replace.
          stale = undefined;
          lastNow = found.now;
          if (found.locked)
            return { kind: 'fill', token, stale: undefined, since: found.now, marker: found.marker };
          // The last fill was uncacheable: queueing on the lock would run the origin one at a time.
          if (found.noStore)
            return { kind: 'fill', token: '', stale: undefined, since: found.now, marker: found.marker };
        }
        if (!waited) {
          waited = true;
          this.event('lock-wait', { key: redisKey });
        }
        // A live holder keeps extending its lock; this cap only guards against one that never finishes.
        if (performance.now() > giveUpAt) {
          const marker = found.kind === 'miss' ? found.marker : undefined;
          return { kind: 'fill', token: '', stale, since: lastNow, marker };
        }
        await sleep(delay);
        delay = Math.min(delay * 2, 100);
      }
    } catch (error) {
      return { kind: 'bypass', error };
    }
  }

  /**
   * Takes the fill lock of `redisKey` for `token` (SET NX), guarded: resolves the Redis time it was
   * taken at (the fill's `since`), or undefined when another holds it. Rejects when Redis is sick; a
   * call that timed out but lands later has its lock released behind it.
   */
  async tryLock(redisKey: string, token: string): Promise<number | undefined> {
    const { taken, at } = await this.tryLockAt(redisKey, token);
    return taken ? at : undefined;
  }

  /**
   * {@link tryLock}, with the Redis time also when another holds the lock, and whether `entryKey`
   * (what a lookup just read) is gone by then.
   */
  private tryLockAt(
    redisKey: string,
    token: string,
    entryKey?: string,
  ): Promise<{ taken: boolean; at: number; entryGone: boolean }> {
    const lockKey = lockKeyOf(redisKey);
    return mayTakeLock(
      this.redis,
      lockKey,
      token,
      (op) => this.call(redisKey, op),
      () => acquireLockAt(this.redis, lockKey, token, this.options.lockTimeoutMs, entryKey),
    );
  }

  /** Keeps the fill lock alive while the origin runs; returns the stop function. */
  holdLock(redisKey: string, token: string): () => void {
    if (!token) return () => {};
    return keepAlive(
      this.redis,
      lockKeyOf(redisKey),
      token,
      this.options.lockTimeoutMs,
      () => this.event('lock-lost', { key: redisKey }),
      this.options.timeoutMs,
    );
  }

  releaseFill(redisKey: string, token: string): void {
    if (!token) return;
    this.call(redisKey, () => releaseLock(this.redis, lockKeyOf(redisKey), token)).catch(() => {});
  }

  /**
   * Ends a fill whose result was not storable: releases the lock and, in the same script, leaves a
   * short-lived marker so waiters and new misses go straight to the origin instead of queueing
   * (not when the lock is no longer this fill's: see store.ts).
   */
  releaseUncacheable(redisKey: string, token: string): void {
    const ttlMs = Math.min(NO_STORE_MS, this.options.lockTimeoutMs);
    this.call(redisKey, () =>
      markNoStore(this.redis, lockKeyOf(redisKey), noStoreKeyOf(redisKey), token, ttlMs),
    ).catch(() => {});
  }

  /** TTL with ±jitter spread, so entries written together do not expire together. */
  jittered(ttlMs: number, jitter = this.options.jitter): number {
    if (jitter === 0) return ttlMs;
    return Math.max(1, Math.round(ttlMs * (1 + (Math.random() * 2 - 1) * jitter)));
  }

  /** Stores a fill's entry (see fill-store.ts). Never rejects. */
  store(
    redisKey: string,
    entry: Entry,
    token: string,
    vary: FillVary | undefined,
    since?: number,
    replaces?: Replaces,
  ): Promise<StoreOutcome> {
    return storeFill(
      {
        options: this.options,
        call: (key, operation) => this.call(key, operation),
        event: (type, details) => this.event(type, details),
        releaseFill: (key, fillToken) => this.releaseFill(key, fillToken),
        strip: (key) => this.strip(key),
      },
      redisKey,
      entry,
      token,
      vary,
      since,
      replaces,
    );
  }

  // This and `redisKeysOf` stay on the class because the public `Cache` type exposes them.
  invalidateRedis(redisKeys: string[], tags: string[]): Promise<void> {
    return invalidateRedis(
      {
        options: this.options,
        redis: this.redis,
        guard: this.guard,
        bus: this.bus,
        dropLocal: (message) => this.coherence.drop(message),
        event: (type, details) => this.event(type, details),
      },
      redisKeys,
      tags,
    );
  }

  redisKeysOf(keys: readonly string[]): string[] {
    return redisKeysOf(this.options.prefix, keys);
  }

  /** A `heard` count, to check a lookup's result with {@link invalidatedSince} (see heard.ts). */
  get heard(): number {
    return this.coherence.heard;
  }

  /** Whether an invalidation heard after `since` (a {@link heard} count) reaches `rec`. */
  invalidatedSince(since: number, rec: Rec): boolean {
    return this.coherence.invalidatedSince(since, rec);
  }

  /** Keys that came back from a script carry the client's own keyPrefix; ioredis would add it again. */
  private strip(key: string): string {
    return this.clientPrefix && key.startsWith(this.clientPrefix) ? key.slice(this.clientPrefix.length) : key;
  }

  /** Unsubscribes the bus (the shared subscriber connection closes with the client); L1 goes off. */
  close(): Promise<void> {
    return this.coherence.close();
  }
}
