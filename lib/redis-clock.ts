import { nodeOf } from './breaker';
import { isCluster, type RedisClient } from './client';

const MAX_NODES = 256;

/**
 * The Redis server's clock as last seen in a script reply (per master on a Cluster), to give a
 * write a deadline in Redis time: a call the kit gave up on (its timeout, then a 503) that reaches
 * Redis later must not apply. A sample is dated when its reply arrived, after Redis read its clock,
 * so estimates never run ahead of Redis: a deadline from them is never later than the moment the
 * kit gives up.
 */
export class RedisClock {
  private readonly samples = new Map<string, { redisMs: number; at: number }>();

  constructor(private readonly redis: RedisClient) {}

  /** Records the Redis time `redisMs` read by a call on `key`, whose reply arrived just now. */
  note(key: string, redisMs: number): void {
    if (!Number.isFinite(redisMs) || redisMs <= 0) return;
    const node = this.node(key);
    if (!this.samples.has(node) && this.samples.size >= MAX_NODES) this.samples.clear();
    this.samples.set(node, { redisMs, at: performance.now() });
  }

  /**
   * The Redis time (whole ms) by which a call on `key` sent now must have run, for a caller that
   * waits `waitMs` for it; undefined before any sample from that node.
   */
  deadline(key: string, waitMs: number): number | undefined {
    const sample = this.samples.get(this.node(key));
    if (!sample) return undefined;
    // Redis reads its clock in whole ms, rounded down: one ms less keeps the bound.
    return Math.floor(sample.redisMs + (performance.now() + waitMs - sample.at)) - 1;
  }

  private node(key: string): string {
    return isCluster(this.redis) ? (nodeOf(this.redis, key) ?? '') : '';
  }
}
