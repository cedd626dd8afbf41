import { createHash, randomBytes } from 'node:crypto';
import { type Entry, encodeEntry } from './entry';
import { tagKey } from './key';
import type { ResolvedCacheOptions } from './options';
import { type Replaces, storeEntry, unlinkKeys } from './store';
import { addToTag } from './tags';

/** What became of a fill's store. */
export type StoreOutcome = 'stored' | 'dropped' | 'failed';

/** The request headers a response varied on, with this request's values, in the same order. */
export interface FillVary {
  names: readonly string[];
  values: readonly string[];
  /**
   * The generation the store will file the variant under: the existing marker's, null for a new
   * marker (the fresh generation), undefined when not known (then the variant's key is registered
   * with the tags once it is written).
   */
  generation?: string | null;
}

/** What storing a fill needs of the cache it runs for. */
export interface FillContext {
  readonly options: ResolvedCacheOptions;
  /** One guarded Redis call on `key`. */
  call<T>(key: string, operation: () => Promise<T>): Promise<T>;
  event(type: string, details?: Record<string, unknown>): void;
  releaseFill(redisKey: string, token: string): void;
  /** A key a script answered, without the client's keyPrefix. */
  strip(key: string): string;
}

/**
 * Registers an entry under its tags, then writes it (releasing the fill lock): one script per tag
 * on the tag's slot, then one on the entry's slot. Tags go first so that an entry in Redis is
 * always reachable by `invalidate({ tags })`, even when the write lands after its call timed out.
 * An invalidation after the registration takes the entry key and its fill lock, so the write
 * (which checks the lock) drops itself; one before it is caught by the check against `since`.
 * Never rejects: 'dropped' when the value may be outdated (an invalidation, a newer entry, a fill
 * without the lock that took too long: see DROPPED), 'failed' when Redis did not answer (reported as
 * `store-error`).
 */
export async function storeFill(
  ctx: FillContext,
  redisKey: string,
  entry: Entry,
  token: string,
  vary: FillVary | undefined,
  since?: number,
  replaces?: Replaces,
): Promise<StoreOutcome> {
  const { redis } = ctx.options;
  try {
    const raw = encodeEntry(entry);
    // Always fresh for a new marker: reusing the looked-up one after an invalidation deleted that
    // marker would make the variants it orphaned servable again.
    const generation = randomBytes(6).toString('base64url');
    // The variant's key as the store script will name it (under the marker the lookup saw, or a new
    // one), so each tag takes both keys in one call; a marker changed in between costs a second one.
    const expected =
      vary && vary.generation !== undefined
        ? variantKeyOf(redisKey, vary.generation ?? generation, vary.values)
        : undefined;
    const registered = expected ? [redisKey, expected] : [redisKey];
    if (!(await addTags(ctx, entry, registered, since))) {
      ctx.releaseFill(redisKey, token);
      ctx.event('store-dropped', { key: redisKey, reason: 'invalidated' });
      return 'dropped';
    }
    const reply = await ctx.call(redisKey, () =>
      storeEntry(
        redis,
        redisKey,
        raw,
        entry.ttlMs,
        token,
        vary?.names ?? [],
        vary?.values ?? [],
        generation,
        since,
        replaces,
      ),
    );
    const dropped = DROPPED.get(reply);
    if (dropped) {
      ctx.event('store-dropped', { key: redisKey, reason: dropped });
      return 'dropped';
    }
    const written = ctx.strip(reply);
    const members = written === redisKey ? [redisKey] : [redisKey, written];
    // Without a lock nothing stops the write after an invalidation that ran since the tags were
    // registered: look again, and take the entry back if one did.
    const recheck = !token && since !== undefined;
    if (recheck && !(await addTags(ctx, entry, members, since))) {
      await ctx.call(redisKey, () => unlinkKeys(redis, members));
      ctx.event('store-dropped', { key: redisKey, reason: 'invalidated' });
      return 'dropped';
    }
    // A variant's own key, so an invalidation frees its memory at once; deleting the marker, which
    // the tags already hold, is what keeps it from being served.
    if (!recheck && written !== redisKey && written !== expected) {
      addTags(ctx, entry, [written], undefined).catch(() => {});
    }
    ctx.event('store', { key: redisKey, bytes: raw.length });
    return 'stored';
  } catch (error) {
    ctx.releaseFill(redisKey, token);
    ctx.event('store-error', { key: redisKey, error: error as Error });
    return 'failed';
  }
}

/**
 * The store script's replies that wrote nothing, as `store-dropped` reasons. '': the fill lost its
 * lock, most likely to an invalidation while the origin ran, so what it read may be older than the
 * write that invalidated it. Without the lock, only the invalidation marks tell a store what changed
 * since it started, and they are kept a minute: a fill slower than that cannot know ('!slow').
 */
const DROPPED = new Map([
  ['', 'lock-lost'],
  ['!invalidated', 'invalidated'],
  ['!replaced', 'replaced'],
  ['!slow', 'slow'],
]);

/** A variant's key, as the store script derives it (sha1 of the header values, one per line). */
function variantKeyOf(redisKey: string, generation: string, values: readonly string[]): string {
  // Redis receives the values UTF-8 encoded, as `update` hashes them.
  return `${redisKey}:v:${generation}:${createHash('sha1').update(values.join('\n')).digest('hex')}`;
}

/** Adds `members` to the entry's tag sets; false when a tag was invalidated since `since`. */
async function addTags(
  ctx: FillContext,
  entry: Entry,
  members: string[],
  since: number | undefined,
): Promise<boolean> {
  if (entry.tags.length === 0) return true;
  const { prefix, redis } = ctx.options;
  const added = await Promise.all(
    entry.tags.map((tag) =>
      ctx.call(tagKey(prefix, tag), () => addToTag(redis, tagKey(prefix, tag), entry.ttlMs, members, since)),
    ),
  );
  return !added.includes(false);
}
