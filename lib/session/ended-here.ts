import { LRUCache } from 'lru-cache';
import { sessionHandle } from './scripts';

/**
 * Handles of sessions this process ended lately (logout, a login's old id, logoutAll, revoke, the
 * cap), for as long as their tombstones last: a request of this process that read one of them
 * before it ended must not re-send its cookie, however fast it is (see commit.ts). Counted per
 * handle: each end notes it once, and a refused end takes back only its own note.
 */
export class EndedHere {
  private readonly notes: LRUCache<string, number>;

  constructor(tombstoneMs: number) {
    this.notes = new LRUCache({ max: 10_000, ttl: Math.max(1, tombstoneMs) });
  }

  /** Notes sessions (by handle) being ended. Before their DESTROY: a request may finish meanwhile. */
  note(handles: readonly string[]): void {
    for (const h of handles) this.notes.set(h, (this.notes.get(h) ?? 0) + 1);
  }

  /**
   * Takes back one note of an end Redis refused. Only that one: a logout or another login may have
   * noted the same session meanwhile, and its end stands.
   */
  unnote(handle: string): void {
    const count = this.notes.get(handle) ?? 0;
    if (count > 1) this.notes.set(handle, count - 1);
    else this.notes.delete(handle);
  }

  /** Whether this process ended session `sid` since the tombstone window began. */
  has(sid: string): boolean {
    return this.notes.has(sessionHandle(sid));
  }
}
