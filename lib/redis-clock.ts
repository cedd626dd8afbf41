import { nodeOf } from './breaker';
import { isCluster, type RedisClient } from './client';

const MAX_NODES = 256;
/** How long the best sample stands before a newer one replaces it (bounds clock drift). */
const SAMPLE_LIFE_MS = 60_000;
/** A sample this far behind the best one means Redis's clock went back, not a late read. */
const CLOCK_STEP_MS = 1000;

/**
 * The Redis server's clock as seen in script replies (per master on a Cluster), to give a write a
 * deadline in Redis time: a call the kit gave up on (its timeout, then a 503) that reaches Redis
 * later must not apply. A sample is dated when its reply is read, after Redis read its clock, so
 * each one puts Redis's clock at or behind the truth; a reply read late (a busy event loop) puts
 * it further behind. The one furthest ahead is the closest: it is kept, until a minute old or
 * until Redis's clock is seen to go back.
 */
export class RedisClock {
  private readonly offsets = new Map<string, { offset: number; at: number }>();

  constructor(private readonly redis: RedisClient) {}

  /** Records the Redis time `redisMs` read by a call on `key`, whose reply is being read now. */
  note(key: string, redisMs: number): void {
    if (!Number.isFinite(redisMs) || redisMs <= 0) return;
    const node = this.node(key);
    const now = performance.now();
    const offset = redisMs - now;
    const best = this.offsets.get(node);
    // Kept unless this one is ahead of it, it is a minute old, or this one is so far behind that
    // Redis's clock went back (NTP, a failover to a host whose clock is behind) rather than a
    // reply being read late: a deadline from the old one would let a late write apply.
    if (
      best &&
      best.offset >= offset &&
      now - best.at < SAMPLE_LIFE_MS &&
      best.offset - offset < CLOCK_STEP_MS
    ) {
      return;
    }
    if (!best && this.offsets.size >= MAX_NODES) this.offsets.clear();
    this.offsets.set(node, { offset, at: now });
  }

  /**
   * The Redis time (whole ms) by which a call on `key` sent now must have run, for a caller that
   * waits `waitMs` for it; undefined before any sample from that node.
   */
  deadline(key: string, waitMs: number): number | undefined {
    const best = this.offsets.get(this.node(key));
    if (!best) return undefined;
    // Redis reads its clock in whole ms, rounded down: one ms less keeps the bound.
    return Math.floor(performance.now() + waitMs + best.offset) - 1;
  }

  private node(key: string): string {
    return isCluster(this.redis) ? (nodeOf(this.redis, key) ?? '') : '';
  }
}
