import { MAX_TIMER_MS } from '../duration';
import { beginWork } from '../pending-work';
import { newToken } from '../token';
import type { CacheCore } from './core';
import type { Entry } from './entry';
import { type Rec, toRec } from './l1';
import { type ResolvedWrap, toEntry } from './wrap-values';

/**
 * cache.wrap's background refresh of a stale value (staleWhileRevalidate): one at a time per key in
 * this process, one across processes (the fill lock), letting go of the lock past 3 × lockTimeout.
 */
export class WrapRefresher {
  /** Background refreshes running here; `slow`: it let go of its lock (refresh-slow). */
  private readonly running = new Map<string, { slow: boolean; looking: boolean }>();

  constructor(private readonly cache: CacheCore) {}

  /**
   * Background refresh of a stale value: once per process (flag) and once across processes (lock).
   * When the stale copy came from L1, another instance may have refreshed Redis already: that value
   * is taken instead of running `fn` once more per instance.
   */
  start<T>(redisKey: string, fn: () => T | Promise<T>, o: ResolvedWrap<T>, stale: Rec, fromL1 = false): void {
    const running = this.running.get(redisKey);
    if (running) {
      // Once this refresh has let go of its lock, another instance may refresh Redis: a stale L1 copy
      // would hide that for the rest of the stale window. One look at a time, not one per read.
      if (fromL1 && running.slow && !running.looking) {
        running.looking = true;
        this.lookInRedis(redisKey)
          .catch(() => {})
          .finally(() => {
            running.looking = false;
          });
      }
      return;
    }
    const state = { slow: false, looking: false };
    this.running.set(redisKey, state);
    // Background work after the call: closeRedis waits for it.
    const endWork = beginWork(this.cache.redis);
    const token = newToken();
    // Whether a failure is the cache's own Redis call (its look, its lock), not fn's.
    let inRedis = true;
    const run = async () => {
      let replacing = stale.entry.createdAt;
      if (fromL1) {
        const found = await this.lookInRedis(redisKey);
        if (found === 'taken') return;
        if (found) replacing = found.entry.createdAt;
      }
      const since = await this.cache.tryLock(redisKey, token);
      if (since === undefined) return;
      const heard = this.cache.heard;
      const stop = this.cache.holdLock(redisKey, token);
      // Past the wait every caller gives up after, the lock goes, so that an fn that never settles
      // does not keep every instance from refreshing (and their misses waiting) for ever. This
      // instance starts no second refresh of the key while fn runs.
      let held = token;
      const letGo = setTimeout(
        () => {
          held = '';
          state.slow = true;
          stop();
          this.cache.releaseFill(redisKey, token);
          this.cache.event('refresh-slow', { key: redisKey });
          // Given up on: what it may still store (only over the stale entry) is not waited for.
          endWork();
        },
        Math.min(3 * this.cache.options.lockTimeoutMs, MAX_TIMER_MS),
      );
      letGo.unref?.();
      let value: T;
      inRedis = false;
      try {
        value = await fn();
      } catch (error) {
        this.cache.releaseFill(redisKey, held);
        throw error;
      } finally {
        clearTimeout(letGo);
        stop();
      }
      let entry: Entry | undefined;
      try {
        entry = toEntry(value, o, (ms) => this.cache.jittered(ms));
      } catch (error) {
        this.cache.releaseFill(redisKey, held);
        reportUnserializable(this.cache, redisKey, error);
        return;
      }
      if (!entry) return this.cache.releaseFill(redisKey, held);
      this.cache.event('refresh', { key: redisKey });
      // A slow fn's value, without the lock, replaces only the stale entry it was run for: not one an
      // invalidation deleted (however long ago), nor a newer one another fill stored since.
      const replaces = held ? undefined : replacing;
      if ((await this.cache.store(redisKey, entry, held, undefined, since, replaces)) === 'stored') {
        this.cache.l1?.set(redisKey, toRec(entry, redisKey, 0, Date.now()), Date.now(), heard);
      }
    };
    run()
      .catch((error) => {
        // Redis down or too slow for the cache's own look or lock: the kit's connection logging says
        // so once per outage, not once per read of the stale value. A refusal (OOM, ACL) and fn's
        // own errors are logged.
        if (inRedis && OUTAGE.has((error as { code?: unknown })?.code as string)) return;
        this.cache.options.logger.warn(
          { key: redisKey, err: error },
          'background refresh failed; stale value kept',
        );
      })
      .finally(() => {
        endWork();
        if (this.running.get(redisKey) === state) this.running.delete(redisKey);
      });
  }

  /**
   * For a stale L1 copy: the entry in Redis. A fresh one (another instance refreshed it) goes into
   * L1 ('taken'); a stale one is returned, for a refresh to replace; undefined when there is none.
   */
  private async lookInRedis(redisKey: string): Promise<'taken' | Rec | undefined> {
    const heard = this.cache.heard;
    const found = await this.cache.fetch(redisKey, undefined, '');
    if (found.kind !== 'hit') return undefined;
    if (Date.now() >= found.rec.freshUntil) return found.rec;
    this.cache.l1?.set(redisKey, found.rec, Date.now(), heard);
    this.cache.event('refresh-from-redis', { key: redisKey });
    return 'taken';
  }
}

/** Errors of an unreachable or too slow Redis (not one that refused). */
const OUTAGE: ReadonlySet<string> = new Set(['ERK_REDIS_UNAVAILABLE', 'ERK_REDIS_TIMEOUT']);

/** A value the serializer could not handle: returned uncached, said once in the log and as an event. */
export function reportUnserializable(cache: CacheCore, redisKey: string, error: unknown): void {
  cache.options.logger.warn(
    { key: redisKey, err: error },
    'cache.wrap could not serialize the value; returned it uncached',
  );
  cache.event('uncacheable', { key: redisKey, reason: 'serializer', error: error as Error });
}
