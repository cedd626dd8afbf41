import { checkClientShape, isCluster, type RedisClient } from '../client';
import { functionOption, optionError, RedisUnavailableError, shown } from '../errors';
import { helperOptions } from '../helper-options';
import { attempt, register, release, stateOf } from './channels';
import { unpark, watchClient, watchClusterNodes, wire } from './life';
import { openSubscriberConnection } from './open';
import {
  closedClients,
  coming,
  type MessageHandler,
  type SharedSubscriber,
  safely,
  subscribers,
} from './state';

export { heartbeat } from './life';

const SUBSCRIBE_KNOWN: ReadonlySet<string> = new Set(['onReconnect']);

/** Options of {@link subscribe}. */
export interface SubscribeOptions {
  /**
   * Called when the subscriber connection came back after a drop and its channels are subscribed
   * again: messages published meanwhile were lost (pub/sub does not queue), so state kept in step by
   * them must start over; anything published from now on is heard.
   */
  onReconnect?: (() => void) | undefined;
}

/**
 * Subscribes to a pub/sub channel over one connection per client, shared by everything in the kit
 * and closed with the client by `closeRedis()`. Returns a function that unsubscribes this handler.
 * Rejects, registering nothing, when the SUBSCRIBE fails (Redis unreachable). Once it has landed, the
 * channel is subscribed again after every drop of the connection (retried with backoff while Redis
 * refuses), until the handler unsubscribes.
 */
export async function subscribe(
  redis: RedisClient,
  channel: string,
  handler: MessageHandler,
  options: SubscribeOptions = {},
): Promise<() => Promise<void>> {
  checkClientShape(redis);
  if (typeof channel !== 'string' || channel === '') {
    throw optionError('channel', `of subscribe must be a non-empty string; got ${shown(channel)}`);
  }
  if (typeof handler !== 'function') {
    throw optionError(
      'handler',
      `of subscribe must be a function (message, channel) => void; got ${shown(handler)}`,
    );
  }
  const onReconnect = functionOption(
    helperOptions(options, SUBSCRIBE_KNOWN, 'subscribe').onReconnect,
    'onReconnect',
  );
  const shared = sharedOf(redis);
  const state = stateOf(shared, channel);
  state.handlers.add(handler);
  try {
    await attempt(shared, channel, state);
  } catch (error) {
    release(shared, channel, state, handler);
    throw error;
  }
  return register(shared, channel, state, handler, onReconnect);
}

/** Hooks of {@link subscribeDurably}. */
export interface DurableHooks {
  onReconnect?: () => void;
  /** A SUBSCRIBE failed (once per streak of failures); it is retried until one lands. */
  onError?: (error: unknown) => void;
  /** The subscription landed after failing: messages published before were never heard. */
  onLanded?: () => void;
  /**
   * The subscriber connection closed (a drop, a Redis restart, `CLIENT KILL`): nothing published is
   * heard until `onReconnect`. Called for every close, even one before the channel ever landed.
   */
  onDrop?: () => void;
}

/**
 * Like {@link subscribe}, but a SUBSCRIBE that fails (Redis down when the app starts) is retried
 * (on every reconnect of the subscriber, and with backoff) until it lands, for as long as the
 * handler is registered. `ready` resolves once the channel is subscribed.
 */
export function subscribeDurably(
  redis: RedisClient,
  channel: string,
  handler: MessageHandler,
  hooks: DurableHooks = {},
): { ready: Promise<void>; unsubscribe: () => Promise<void> } {
  const shared = sharedOf(redis);
  const state = stateOf(shared, channel);
  state.handlers.add(handler);
  if (hooks.onLanded) state.landed.add(hooks.onLanded);
  if (hooks.onDrop) shared.dropHooks.add(hooks.onDrop);
  if (hooks.onError) {
    state.failed.add(hooks.onError);
    // Joining a channel whose subscription is already failing: this caller is in that streak too.
    const { onError } = hooks;
    if (state.failures > 0 && !state.subscribed) safely(() => onError(state.lastError));
  }
  attempt(shared, channel, state).catch(() => {});
  const unregister = register(shared, channel, state, handler, hooks.onReconnect);
  return {
    ready: state.whenSubscribed,
    unsubscribe: () => {
      if (hooks.onLanded) state.landed.delete(hooks.onLanded);
      if (hooks.onDrop) shared.dropHooks.delete(hooks.onDrop);
      if (hooks.onError) state.failed.delete(hooks.onError);
      return unregister();
    },
  };
}

function sharedOf(redis: RedisClient): SharedSubscriber {
  if (closedClients.has(redis) || redis.status === 'end') {
    throw new RedisUnavailableError('express-redis-kit: cannot subscribe: the Redis client is closed.');
  }
  const existing = subscribers.get(redis);
  if (existing) {
    // A subscribe right after the app called connect() again, before the client's 'ready'.
    if (existing.parked && coming(redis)) unpark(redis, existing);
    return existing;
  }
  const shared: SharedSubscriber = {
    connection: openSubscriberConnection(redis),
    channels: new Map(),
    reconnectHooks: new Set(),
    dropHooks: new Set(),
    parked: false,
    connectedBefore: false,
    drops: 0,
  };
  wire(redis, shared, shared.connection);
  watchClient(redis, shared);
  if (isCluster(redis)) watchClusterNodes(redis, shared);
  subscribers.set(redis, shared);
  return shared;
}

/** Hands over the kit's subscriber connection of `redis` (if any) for closing, and forgets it. */
export function takeSubscriber(redis: RedisClient): RedisClient | undefined {
  closedClients.add(redis);
  const shared = subscribers.get(redis);
  subscribers.delete(redis);
  if (!shared) return undefined;
  shared.closed = true;
  clearTimeout(shared.reopen);
  for (const state of shared.channels.values()) clearTimeout(state.retry);
  return shared.connection;
}
