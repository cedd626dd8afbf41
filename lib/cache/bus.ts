import { randomBytes } from 'node:crypto';
import type { RedisClient } from '../client';
import { subscribe } from '../pubsub';

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
  onError: (error: unknown) => void;
  onReconnect: () => void;
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
  private closed = false;
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
    const { onInvalidation, onError, onReconnect } = listener;
    this.ready = subscribe(
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
      { onReconnect },
    ).then(
      (unsubscribe) => {
        if (this.closed) void unsubscribe();
        else this.unsubscribe = unsubscribe;
      },
      (error) => onError(error),
    );
  }

  publish(message: Invalidation): Promise<unknown> {
    const payload: Message = { o: this.origin, k: message.keys, t: message.tags };
    return this.redis.publish(this.channel, JSON.stringify(payload));
  }

  /**
   * Does not wait for a subscription still on its way (Redis unreachable, it may take as long as the
   * client keeps retrying): that one is undone when it lands.
   */
  async close(): Promise<void> {
    this.closed = true;
    const unsubscribe = this.unsubscribe;
    this.unsubscribe = undefined;
    await unsubscribe?.();
  }
}
