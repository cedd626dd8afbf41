import type { Redis } from 'ioredis';
import type { RedisClient } from '../client';

// What every part of the kit's pub/sub shares: one subscriber per client, and its channels.

export type MessageHandler = (message: string, channel: string) => void;

export interface ChannelState {
  /** Every registered handler keeps the channel wanted: a failed SUBSCRIBE is retried until one lands. */
  handlers: Set<MessageHandler>;
  subscribed: boolean;
  /** The SUBSCRIBE in flight, shared by every caller that needs the channel. */
  pending?: Promise<void>;
  /** Failed attempts since the last success (backoff, and "a gap was not heard"). */
  failures: number;
  lastError?: unknown;
  retry?: NodeJS.Timeout;
  /** Called when a SUBSCRIBE lands after failing: messages of the gap were never heard. */
  landed: Set<() => void>;
  /** Called once per failure streak. */
  failed: Set<(error: unknown) => void>;
  /** Resolves when the channel is next subscribed: at once while it is (see `markUnsubscribed`). */
  whenSubscribed: Promise<void>;
  markSubscribed: () => void;
}

/** A `whenSubscribed` for the next landing, and how to resolve it. */
export function nextLanding(): Pick<ChannelState, 'whenSubscribed' | 'markSubscribed'> {
  let markSubscribed!: () => void;
  const whenSubscribed = new Promise<void>((resolve) => {
    markSubscribed = resolve;
  });
  return { whenSubscribed, markSubscribed };
}

/**
 * The channel is no longer subscribed (its connection closed, parked): whoever starts waiting for it
 * from now (a cache made meanwhile) waits for the next landing, not the one already past.
 */
export function markUnsubscribed(state: ChannelState): void {
  if (!state.subscribed) return;
  state.subscribed = false;
  Object.assign(state, nextLanding());
}

export interface SharedSubscriber {
  connection: Redis;
  channels: Map<string, ChannelState>;
  reconnectHooks: Set<() => void>;
  /** Called when the connection in use closes: nothing published is heard until it is back. */
  dropHooks: Set<() => void>;
  /** Opens the next connection after one ended by itself. */
  reopen?: NodeJS.Timeout;
  /**
   * The app closed its client (quit/disconnect) without `closeRedis`: the connection is closed and
   * the channels wait, still wanted, for the client to be connected again.
   */
  parked: boolean;
  /** Handed to `closeRedis`: for good. */
  closed?: boolean;
  /** A connection of it was ready once: the next 'ready' is a reconnect. */
  connectedBefore: boolean;
  /** Connections that ended by themselves since the last one was ready (backoff of the next). */
  drops: number;
  /**
   * What the connection in use last failed on, until it is ready. A SUBSCRIBE that gives up waiting
   * for it only says "max retries per request"; this says why (e.g. Redis's `maxclients`).
   */
  connectionError?: unknown;
}

/** A client that is connected, or on its way (the app called `connect()`). */
export function coming(redis: RedisClient): boolean {
  return redis.status === 'ready' || redis.status === 'connect' || redis.status === 'connecting';
}

/** The kit's subscriber of each client. */
export const subscribers = new WeakMap<object, SharedSubscriber>();

/** Clients handed to `closeRedis`: a subscriber opened for one now would reconnect for ever. */
export const closedClients = new WeakSet<object>();

/** The subscriber's connection in use (not one put aside, nor of a parked or closed subscriber). */
export function current(shared: SharedSubscriber, connection: RedisClient): boolean {
  return shared.connection === connection && !shared.parked && !shared.closed;
}

export function safely(hook: () => void): void {
  try {
    hook();
  } catch {
    // A hook's failure is its own.
  }
}
