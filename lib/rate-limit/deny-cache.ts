/** A denial remembered until its retry time. */
export interface DenyEntry {
  /** `performance.now()` before which a request of `cost` is certainly denied. */
  until: number;
  cost: number;
  /** The script reply of the denial, for headers and `req.rateLimit`. */
  reply: readonly number[];
  binding: number;
  /**
   * `performance.now()` when the reply was read: ages the reply's reset and retry times for clients.
   * Redis decided before it, so a wait counted from here is never early (`until`, counted from when
   * the call was sent, is: right for how long to deny, too short to tell a client).
   */
  readAt: number;
}

/**
 * In-process memory of currently denied client keys, so repeat offenders are answered without a
 * Redis call. It can only ever deny, never allow, so it cannot let more than `limit` through: an
 * entry lives until the moment Redis said a request of that cost could pass again (counted from when
 * the call was sent, so never later than the truth), and it answers only requests of that cost: a
 * heavier one is denied too, but only Redis knows how long it must wait. Bounded: the oldest entry
 * goes first.
 *
 * A denial is remembered only if nothing gave the key's quota back (a refund, `reset()`) after the
 * call that brought it was sent: such a denial may be stale by the time it arrives. Stamps are per
 * key, so one client's refunds do not stop the cache from remembering another client's denials;
 * with `skipSuccessfulRequests` on a busy server, some refund is always in flight.
 */
export class DenyCache {
  private readonly entries = new Map<string, DenyEntry>();
  /** Stamp of each key's latest forget(); bounded like the entries. */
  private readonly forgotten = new Map<string, number>();
  private clock = 0;
  /** Calls sent before this stamp remember nothing (the forgotten map was cleared at it). */
  private floor = 0;

  constructor(private readonly max: number) {}

  /** The stamp to pass to `set()` with the reply of a call sent now. */
  stamp(): number {
    return this.clock;
  }

  /** The cached denial for `key` of a request of `cost`, if still current. */
  get(key: string, cost: number, now: number): DenyEntry | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.until <= now) {
      this.entries.delete(key);
      return undefined;
    }
    return cost === entry.cost ? entry : undefined;
  }

  /** Remembers `key`'s denial from a call sent at `sentAt` (a `stamp()`), unless it may be stale. */
  set(key: string, entry: DenyEntry, sentAt: number): void {
    if (sentAt < this.floor || (this.forgotten.get(key) ?? 0) > sentAt) return;
    if (this.entries.has(key)) this.entries.delete(key);
    else if (this.entries.size >= this.max) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.set(key, entry);
  }

  /** `key`'s quota came back: forget its denial, and any still on its way from an earlier call. */
  forget(key: string): void {
    this.entries.delete(key);
    this.clock++;
    if (this.forgotten.size >= this.max && !this.forgotten.has(key)) {
      // Full: forget every key's in-flight denials at once, the side that costs a Redis call, not a
      // wrong answer.
      this.forgotten.clear();
      this.floor = this.clock;
    }
    this.forgotten.delete(key);
    this.forgotten.set(key, this.clock);
  }

  get size(): number {
    return this.entries.size;
  }
}
