import type Redis from 'ioredis';
import { isCluster, type RedisClient } from './client';

type MessageHandler = (message: string, channel: string) => void;

interface SharedSubscriber {
  connection: RedisClient;
  handlers: Map<string, Set<MessageHandler>>;
  reconnectHooks: Set<() => void>;
}

/** Options of {@link subscribe}. */
export interface SubscribeOptions {
  /**
   * Called when the subscriber connection comes back after a drop: messages published meanwhile
   * were lost (pub/sub does not queue), so state kept in step by them must start over.
   */
  onReconnect?: () => void;
}

/**
 * Subscribes to a pub/sub channel over one connection per client, shared by everything in the kit
 * and closed with the client by `closeRedis()`. Returns a function that unsubscribes this handler.
 */
export async function subscribe(
  redis: RedisClient,
  channel: string,
  handler: MessageHandler,
  options: SubscribeOptions = {},
): Promise<() => Promise<void>> {
  let shared = subscribers.get(redis);
  if (!shared) {
    // No command timeout: a subscriber connection waits for messages by design.
    const connection = isCluster(redis)
      ? redis.duplicate()
      : (redis as Redis).duplicate({ commandTimeout: undefined });
    const handlers = new Map<string, Set<MessageHandler>>();
    connection.on('message', (ch: string, message: string) => {
      for (const h of handlers.get(ch) ?? []) {
        try {
          h(message, ch);
        } catch {
          // One bad handler must not starve the others.
        }
      }
    });
    connection.on('error', () => {
      // ioredis reconnects and resubscribes by itself; the error is already visible on the main client.
    });
    const reconnectHooks = new Set<() => void>();
    let connectedBefore = false;
    connection.on('ready', () => {
      if (connectedBefore) for (const hook of reconnectHooks) hook();
      connectedBefore = true;
    });
    const created: SharedSubscriber = { connection, handlers, reconnectHooks };
    shared = created;
    subscribers.set(redis, created);
    // If the app closes its client itself, the subscriber must not keep the process alive.
    redis.once('end', () => {
      if (subscribers.get(redis) !== created) return;
      subscribers.delete(redis);
      connection.disconnect();
    });
  }
  const { connection, handlers, reconnectHooks } = shared;
  let set = handlers.get(channel);
  if (!set) {
    set = new Set();
    handlers.set(channel, set);
    try {
      await connection.subscribe(channel);
    } catch (error) {
      // Leave no empty entry behind, or later calls would skip SUBSCRIBE and hear nothing.
      if (handlers.get(channel)?.size === 0) handlers.delete(channel);
      throw error;
    }
  }
  set.add(handler);
  const hook = options.onReconnect;
  if (hook) reconnectHooks.add(hook);
  return async () => {
    if (hook) reconnectHooks.delete(hook);
    const current = handlers.get(channel);
    if (!current) return;
    current.delete(handler);
    if (current.size === 0) {
      handlers.delete(channel);
      if (connection.status === 'ready') await connection.unsubscribe(channel).catch(() => {});
    }
  };
}

const subscribers = new WeakMap<object, SharedSubscriber>();

/** Hands over the kit's subscriber connection of `redis` (if any) for closing, and forgets it. */
export function takeSubscriber(redis: RedisClient): RedisClient | undefined {
  const shared = subscribers.get(redis);
  subscribers.delete(redis);
  return shared?.connection;
}
