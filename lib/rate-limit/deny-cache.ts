/** A denial remembered until its retry time. */
export interface DenyEntry {
  /** `Date.now()` before which a request of at least `cost` is certainly denied. */
  until: number;
  cost: number;
  /** The script reply of the denial, for headers and `req.rateLimit`. */
  reply: readonly number[];
  binding: number;
  at: number;
}

/**
 * In-process memory of currently denied client keys, so repeat offenders are answered without a
 * Redis call. It can only ever deny, never allow, so it cannot let more than `limit` through: an
 * entry lives until the moment Redis said a request of that cost could pass again, and it answers
 * only requests costing at least as much as the denied one. Bounded: the oldest entry goes first.
 */
export class DenyCache {
  private readonly entries = new Map<string, DenyEntry>();

  constructor(private readonly max: number) {}

  /** The cached denial for `key` that also covers a request of `cost`, if still current. */
  get(key: string, cost: number, now: number): DenyEntry | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.until <= now) {
      this.entries.delete(key);
      return undefined;
    }
    return cost >= entry.cost ? entry : undefined;
  }

  set(key: string, entry: DenyEntry): void {
    if (this.entries.has(key)) this.entries.delete(key);
    else if (this.entries.size >= this.max) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.set(key, entry);
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  get size(): number {
    return this.entries.size;
  }
}
