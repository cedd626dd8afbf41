import type { Rec } from './l1';

/** What an invalidation can reach: an entry, or a Vary marker (its Redis key only, no tags). */
type Reached = Pick<Rec, 'redisKey'> & { entry?: Pick<Rec['entry'], 'tags'> };

/** How many invalidations a cache remembers for {@link HeardLog.reachedSince}. */
const MAX_HEARD = 256;

/** Whether an invalidation of these Redis keys and tags reaches `rec`. */
export function reaches(rec: Reached, redisKeys: ReadonlySet<string>, tags: ReadonlySet<string>): boolean {
  return (
    redisKeys.has(rec.redisKey) ||
    (tags.size > 0 && rec.entry !== undefined && rec.entry.tags.some((tag) => tags.has(tag)))
  );
}

/**
 * The invalidations one cache instance has heard (its own and others', and reconnects that may have
 * missed some). A lookup or fill records `count` when it starts; a request that waited on it checks
 * its result with `reachedSince`: what a lookup that began before an invalidation read may be what
 * it invalidated. The L1 checks what a lookup or fill puts there the same way. Unrelated
 * invalidations leave the result usable, so coalescing and L1 hold under a steady stream of them.
 */
export class HeardLog {
  private heard = 0;
  /** The latest, newest last; `keys` undefined: anything (a reconnect may have missed some). */
  private readonly latest: Array<{ seq: number; keys?: ReadonlySet<string>; tags: ReadonlySet<string> }> = [];

  get count(): number {
    return this.heard;
  }

  /** Notes an invalidation; no `keys`: of anything. */
  hear(keys: ReadonlySet<string> | undefined, tags: ReadonlySet<string> = new Set()): void {
    this.latest.push({ seq: ++this.heard, ...(keys ? { keys } : {}), tags });
    if (this.latest.length > MAX_HEARD) this.latest.shift();
  }

  /** Whether an invalidation heard after `since` (a `count`) reaches `rec`. */
  reachedSince(since: number, rec: Reached): boolean {
    if (since === this.heard) return false;
    // Older than what the log remembers: assume it was reached.
    if (this.heard - since > this.latest.length) return true;
    return this.latest.some(
      (heard) => heard.seq > since && (heard.keys === undefined || reaches(rec, heard.keys, heard.tags)),
    );
  }
}
