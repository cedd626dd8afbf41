import { randomBytes } from 'node:crypto';
import type { RedisClient } from '../client';
import { emitWarningOnce } from '../logger';
import { subscribeDurably } from '../pubsub';

/** What every instance's L1 must drop. */
export interface Invalidation {
  keys: string[];
  tags: string[];
}

interface Message {
  /** Sender, so an instance skips its own messages (it dropped its L1 before publishing). */
  o: string;
  k: string[];
  t: string[];
}

/** What a subscribing bus does with what it hears. */
export interface BusListener {
  onInvalidation: (message: Invalidation) => void;
  /** The subscription failed (Redis unreachable); it is retried until it lands. */
  onError: (error: unknown) => void;
  /** The subscriber connection closed: nothing is heard until `onReconnect`. */
  onDrop: () => void;
  /** The subscriber connection came back after a drop: messages sent meanwhile were missed. */
  onReconnect: () => void;
  /** A subscription that had failed landed at last (messages sent before it were never heard). */
  onLanded: () => void;
}

/**
 * Cross-instance L1 invalidation over Redis pub/sub, on the kit's one shared subscriber connection.
 * Pub/sub is fire-and-forget: a message sent while an instance is disconnected is lost, so the L1 is
 * cleared whenever the client reconnects (see `onReconnect`). Every cache publishes its
 * invalidations; only one with an L1 subscribes (without `listener`, nothing is subscribed), so a
 * job on `l1: false` still clears the web instances' L1.
 */
export class Bus {
  readonly origin = randomBytes(8).toString('base64url');
  private unsubscribe: (() => Promise<void>) | undefined;
  /** Resolves once the channel is subscribed (retried until it is, while the bus is open). */
  readonly ready: Promise<void>;

  constructor(
    private readonly redis: RedisClient,
    private readonly channel: string,
    listener?: BusListener,
  ) {
    if (!listener) {
      this.ready = Promise.resolve();
      return;
    }
    const { onInvalidation, onError, onDrop, onReconnect, onLanded } = listener;
    const subscription = subscribeDurably(
      redis,
      channel,
      (raw) => {
        let message: Message;
        try {
          message = JSON.parse(raw) as Message;
        } catch {
          return;
        }
        if (message.o === this.origin || !Array.isArray(message.k) || !Array.isArray(message.t)) return;
        onInvalidation({ keys: message.k, tags: message.t });
      },
      { onReconnect, onError, onLanded, onDrop },
    );
    this.ready = subscription.ready;
    this.unsubscribe = subscription.unsubscribe;
    const open = (openBuses.get(redis) ?? 0) + 1;
    openBuses.set(redis, open);
    if (open > MANY_OPEN) {
      // Each one is held by the client's subscriber, with its whole L1, until close().
      emitWarningOnce(
        'ERK_CACHE_NOT_CLOSED',
        () =>
          `express-redis-kit: over ${MANY_OPEN} caches with an L1 are open on one Redis client. Each stays in memory (with its L1) until cache.close(): make a cache (or cacheResponse()) once, at start-up, not per request, or close it when done.`,
      );
    }
  }

  publish(message: Invalidation): Promise<unknown> {
    const payload: Message = { o: this.origin, k: message.keys, t: message.tags };
    return this.redis.publish(this.channel, JSON.stringify(payload));
  }

  async close(): Promise<void> {
    const unsubscribe = this.unsubscribe;
    this.unsubscribe = undefined;
    if (unsubscribe) openBuses.set(this.redis, (openBuses.get(this.redis) ?? 1) - 1);
    await unsubscribe?.();
  }
}

/** Subscribed buses per client, to spot caches made over and over and never closed. */
const openBuses = new WeakMap<RedisClient, number>();
const MANY_OPEN = 100;
