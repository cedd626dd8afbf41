import type { RedisClient } from '../client';
import { Bus, type Invalidation } from './bus';
import { HeardLog } from './heard';
import { clearOnReconnect, L1, type Rec, stopClearingOnReconnect } from './l1';
import type { ResolvedCacheOptions } from './options';

/**
 * What keeps one instance's view of the cache current: its L1 tier, the invalidation bus that
 * empties it whenever any instance invalidates, and the log of invalidations heard (heard.ts), which
 * lookups still in flight and L1 fills check their result against. The Redis side (lookups, fill
 * locks, stores) is core.ts.
 */
export class Coherence {
  readonly l1: L1 | undefined;
  readonly bus: Bus;
  private readonly heardLog = new HeardLog();

  constructor(
    private readonly redis: RedisClient,
    options: Pick<ResolvedCacheOptions, 'prefix' | 'l1' | 'logger'>,
  ) {
    const channel = `${options.prefix}cache:bus`;
    if (!options.l1) {
      this.bus = new Bus(redis, channel);
      return;
    }
    const l1 = new L1(options.l1, this.heardLog, () => redis.status === 'ready');
    this.l1 = l1;
    this.bus = new Bus(redis, channel, {
      onInvalidation: (message) => this.drop(message),
      onError: (error) => {
        l1.suspend();
        options.logger.warn(
          { err: error },
          'cannot subscribe to the invalidation channel; L1 is off until it can (retrying)',
        );
      },
      // Until the channel is heard again (another instance may be invalidating meanwhile): L1 only
      // while Redis cannot be reached either. Then emptied: messages sent meanwhile were lost.
      onDrop: () => l1.deafen(),
      onReconnect: () => l1.hearing(),
      onLanded: () => l1.resume(),
    });
    clearOnReconnect(redis, l1);
    // Off until the first subscription lands: an invalidation published before it would never
    // reach this instance, and nothing would empty the L1 afterwards.
    l1.suspend();
    this.bus.ready.then(
      () => l1.resume(),
      () => {},
    );
  }

  /** How many invalidations this instance has heard: read it before a lookup (see heard.ts). */
  get heard(): number {
    return this.heardLog.count;
  }

  /** Whether an invalidation heard after `since` (a {@link heard} count) reaches `rec`. */
  invalidatedSince(since: number, rec: Rec): boolean {
    return this.heardLog.reachedSince(since, rec);
  }

  /** An invalidation, this instance's own or heard on the bus: noted, then dropped from L1. */
  drop(message: Invalidation): void {
    const keys = new Set(message.keys);
    const tags = new Set(message.tags);
    this.heardLog.hear(keys, tags);
    this.l1?.drop(keys, tags);
  }

  /** Unsubscribes the bus (the shared subscriber connection closes with the client). */
  async close(): Promise<void> {
    if (this.l1) {
      stopClearingOnReconnect(this.redis, this.l1);
      // Deaf from here on: a request still served while the app shuts down must not get from L1
      // what another instance has invalidated since.
      this.l1.close();
    }
    await this.bus.close().catch(() => {});
  }
}
