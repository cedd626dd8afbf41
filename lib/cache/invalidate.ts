import type { RedisClient } from '../client';
import { RedisUnavailableError } from '../errors';
import { type GuardOptions, guarded } from '../guarded';
import type { Bus, Invalidation } from './bus';
import { entryKey, lockKeyOf, tagKey, valueKey } from './key';
import type { ResolvedCacheOptions } from './options';
import { MIN_MARK_MS, markInvalidated, unlinkKeys } from './store';
import { forgetTaken, takeTag } from './tags';

/** What an invalidation needs of the cache it runs for. */
export interface InvalidationContext {
  readonly options: ResolvedCacheOptions;
  readonly redis: RedisClient;
  readonly guard: GuardOptions;
  readonly bus: Bus;
  dropLocal(message: Invalidation): void;
  event(type: string, details?: Record<string, unknown>): void;
}

/**
 * How long a tag remembers its last invalidation, for fills that started before it and store after:
 * longer than any fill is expected to run (at least a minute).
 */
export function invalidationMarkMs(lockTimeoutMs: number): number {
  return Math.max(MIN_MARK_MS, 3 * lockTimeoutMs);
}

/**
 * Deletes entries by tag and by Redis key, everywhere: this instance's L1 first, then the Redis
 * entries, then the other instances' L1 over the bus. Per tag, one script takes the tag set (read +
 * delete, atomic in the tag's slot); the member entries are then unlinked in their own slots.
 * Each call may take `max(timeout, 2 s)`: invalidation is not a read that can fall back to the origin.
 */
export async function invalidateRedis(
  core: InvalidationContext,
  redisKeys: string[],
  tags: string[],
): Promise<void> {
  const message = { keys: redisKeys, tags };
  // Before any Redis call, and whatever becomes of it: this instance never serves what it was told
  // is outdated, even when Redis is slow or down.
  core.dropLocal(message);
  const { prefix } = core.options;
  const timeoutMs = Math.max(core.options.timeoutMs, 2000);
  // `key`: undefined for the calls that span slots.
  const slow = <T>(key: string | undefined, op: () => Promise<T>, repeatable = false) =>
    guarded(core.redis, op, { ...core.guard, timeoutMs, key, repeatable });
  // Fills that run without the lock have none to lose: named keys are marked (before anything is
  // taken or deleted, so a failure here loses nothing), and their stores check the mark. Tag members
  // are covered by the tags' own marks.
  const markMs = invalidationMarkMs(core.options.lockTimeoutMs);
  await Promise.all(redisKeys.map((key) => slow(key, () => markInvalidated(core.redis, key, markMs))));
  // Settled one by one: a tag set already taken has lost its member list, so its entries must go
  // even if another tag's slot failed.
  const taken = await Promise.allSettled(
    tags.map((tag) =>
      slow(tagKey(prefix, tag), () =>
        takeTag(core.redis, tagKey(prefix, tag), invalidationMarkMs(core.options.lockTimeoutMs)),
      ),
    ),
  );
  const failed = taken.find((result) => result.status === 'rejected');
  // Nothing taken, nothing lost: no point waiting on a Redis that just failed for the rest.
  if (failed && taken.every((result) => result.status === 'rejected')) throw failed.reason;
  const doomed = new Set(redisKeys);
  for (const result of taken)
    if (result.status === 'fulfilled') for (const key of result.value.members) doomed.add(key);
  // A fill running now may have read the data before the write behind this invalidation: taking
  // its lock away makes its store a no-op (the store script checks the lock is still its own).
  for (const key of [...doomed]) doomed.add(lockKeyOf(key));
  if (doomed.size > 0) await slow(undefined, () => unlinkKeys(core.redis, [...doomed]), true);
  // Nobody waits for this: if it fails, the next invalidation of the tag unlinks them again (harmless).
  taken.forEach((result, i) => {
    if (result.status === 'fulfilled' && result.value.members.length > 0) {
      forgetTaken(core.redis, tagKey(prefix, tags[i]!), result.value).catch(() => {});
    }
  });
  // A read between the first drop and the unlink may have brought an old entry back from Redis.
  core.dropLocal(message);
  let unpublished: unknown;
  await slow(undefined, () => core.bus.publish(message)).catch((error: unknown) => {
    unpublished = error;
  });
  if (failed) throw failed.reason;
  if (unpublished !== undefined) {
    // Redis is already right; only the other instances' L1 copies are left, until they expire there.
    throw new RedisUnavailableError(
      `entries deleted from Redis, but other instances were not told (publish failed: ${(unpublished as Error)?.message ?? unpublished}); their L1 copies stay until they expire`,
      { cause: unpublished },
    );
  }
  core.event('invalidate', { keys: redisKeys.length, tags: tags.length, deleted: doomed.size });
}

/** `invalidate({ keys })`: a key may name a `wrap()` value or a response, so both are removed. */
export function redisKeysOf(prefix: string, keys: readonly string[]): string[] {
  return keys.flatMap((k) => [valueKey(prefix, k), entryKey(prefix, k)]);
}
