import type { Cluster, Redis } from 'ioredis';
import { isCluster, type RedisClient } from './client';
import { RedisUnavailableError } from './errors';
import { openSubscriberConnection } from './subscriber-connection';

type MessageHandler = (message: string, channel: string) => void;

interface ChannelState {
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
  whenSubscribed: Promise<void>;
  markSubscribed: () => void;
}

interface SharedSubscriber {
  connection: Redis;
  channels: Map<string, ChannelState>;
  reconnectHooks: Set<() => void>;
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
}

/** A client that is connected, or on its way (the app called `connect()`). */
function coming(redis: RedisClient): boolean {
  return redis.status === 'ready' || redis.status === 'connect' || redis.status === 'connecting';
}

/** Options of {@link subscribe}. */
export interface SubscribeOptions {
  /**
   * Called when the subscriber connection came back after a drop and its channels are subscribed
   * again: messages published meanwhile were lost (pub/sub does not queue), so state kept in step by
   * them must start over; anything published from now on is heard.
   */
  onReconnect?: () => void;
}

/** Longest wait between two SUBSCRIBE attempts of a channel kept wanted through failures. */
const MAX_RETRY_MS = 30_000;
/** Longest wait before the next connection after connections keep ending (a whole Cluster down). */
const MAX_REOPEN_MS = 2000;
/** How often a reconnecting client is looked at for having been closed by the app meanwhile. */
const CLOSED_WATCH_MS = 500;
/**
 * How often the subscriber connection is pinged, and how long its PONG may take. A subscriber only
 * listens: when its TCP connection dies silently (a NAT or load balancer forgets an idle flow, a host
 * gone without a reset), nothing fails and it would be deaf for hours (the OS keepalive). A PING also
 * keeps such a flow alive. Internal; tests shorten it.
 */
export const heartbeat = { everyMs: 5_000, timeoutMs: 5_000 };

const subscribers = new WeakMap<object, SharedSubscriber>();

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
  const shared = sharedOf(redis);
  const state = stateOf(shared, channel);
  state.handlers.add(handler);
  try {
    await attempt(shared, channel, state);
  } catch (error) {
    release(shared, channel, state, handler);
    throw error;
  }
  return register(shared, channel, state, handler, options.onReconnect);
}

/** Hooks of {@link subscribeDurably}. */
export interface DurableHooks {
  onReconnect?: () => void;
  /** A SUBSCRIBE failed (once per streak of failures); it is retried until one lands. */
  onError?: (error: unknown) => void;
  /** The subscription landed after failing: messages published before were never heard. */
  onLanded?: () => void;
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
      if (hooks.onError) state.failed.delete(hooks.onError);
      return unregister();
    },
  };
}

/** Clients handed to `closeRedis`: a subscriber opened for one now would reconnect for ever. */
const closedClients = new WeakSet<object>();

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

/** The subscriber's connection in use (not one put aside, nor of a parked or closed subscriber). */
function current(shared: SharedSubscriber, connection: RedisClient): boolean {
  return shared.connection === connection && !shared.parked && !shared.closed;
}

function wire(redis: RedisClient, shared: SharedSubscriber, connection: Redis): void {
  shared.connection = connection;
  const { channels } = shared;
  let heard = 0;
  connection.on('message', (ch: string, message: string) => {
    heard++;
    for (const h of channels.get(ch)?.handlers ?? []) {
      try {
        h(message, ch);
      } catch {
        // One bad handler must not starve the others.
      }
    }
  });
  connection.on('error', () => {
    // The error is already visible on the main client.
  });
  let beating: NodeJS.Timeout | undefined;
  // Connected but never ready: a stopped process still accepts TCP, and ioredis's ready check has no
  // time limit, so a connection to a frozen node would wait there for ever (the heartbeat starts
  // at 'ready'). A server that answers is alive, only not ready yet (LOADING): it is waited for.
  let readyBy: NodeJS.Timeout | undefined;
  const awaitReady = (bytesBefore: number) => {
    clearTimeout(readyBy);
    readyBy = setTimeout(() => {
      if (!current(shared, connection) || connection.status === 'ready') return;
      const bytes = connection.stream?.bytesRead ?? 0;
      if (bytes > bytesBefore) awaitReady(bytes);
      else drop(connection);
    }, heartbeat.timeoutMs);
    readyBy.unref();
  };
  connection.on('connect', () => awaitReady(0));
  connection.on('close', () => {
    clearInterval(beating);
    clearTimeout(readyBy);
    // A connection put aside closes after it (maybe after its successor subscribed).
    if (shared.connection !== connection) return;
    // A new connection starts with no subscriptions.
    for (const state of channels.values()) state.subscribed = false;
  });
  connection.on('ready', () => {
    if (!current(shared, connection)) return;
    shared.drops = 0;
    clearTimeout(readyBy);
    clearInterval(beating);
    beating = beat(shared, connection, () => heard);
    // Channels still wanted (dropped with the connection, or after a failed SUBSCRIBE): subscribe
    // again now that the connection is back.
    const resubscribed: Array<Promise<unknown>> = [];
    for (const [channel, state] of channels) {
      if (state.handlers.size === 0 || state.subscribed) continue;
      if (!state.pending) {
        clearTimeout(state.retry);
        attempt(shared, channel, state).catch(() => {});
      }
      if (state.pending) resubscribed.push(state.pending.catch(() => {}));
    }
    if (!shared.connectedBefore) {
      shared.connectedBefore = true;
      return;
    }
    // The hooks run once the channels are heard again: state they rebuild before that (an L1
    // refilled) would miss what is published until the SUBSCRIBE lands. Only the hooks of those
    // subscribed before the drop: one subscribing meanwhile missed nothing.
    const hooks = [...shared.reconnectHooks];
    void Promise.all(resubscribed).then(() => {
      if (!current(shared, connection)) return;
      for (const hook of hooks) if (shared.reconnectHooks.has(hook)) safely(hook);
    });
  });
  connection.on('reconnecting', () => parkIfClosed(redis, shared, connection));
  connection.on('connect', () => parkIfClosed(redis, shared, connection));
  connection.on('end', () => {
    if (!current(shared, connection) || parkIfClosed(redis, shared, connection)) return;
    // Ended by itself: a Cluster node's connection (it does not reconnect, so that the next can go
    // to another node), or a client whose retryStrategy gave up. The first goes at once (fewer
    // messages missed), then with backoff while they keep failing (a whole Cluster down).
    const { drops } = shared;
    const delay = drops === 0 ? 0 : Math.min(MAX_REOPEN_MS, 100 * 2 ** Math.min(drops - 1, 8));
    shared.drops++;
    clearTimeout(shared.reopen);
    shared.reopen = setTimeout(() => {
      shared.reopen = undefined;
      if (current(shared, connection) && subscribers.get(redis) === shared) {
        wire(redis, shared, openSubscriberConnection(redis));
      }
    }, delay);
    shared.reopen.unref();
  });
}

/**
 * Pings the connection; one that neither answers nor delivers a message in time is dropped, to be
 * opened again. Messages count as signs of life: under a burst the PONG waits behind them.
 */
function beat(shared: SharedSubscriber, connection: Redis, heard: () => number): NodeJS.Timeout {
  let waiting = false;
  let deadline: NodeJS.Timeout | undefined;
  const done = () => {
    waiting = false;
    clearTimeout(deadline);
  };
  const expect = (heardBefore: number) => {
    deadline = setTimeout(() => {
      // After the I/O already read: a blocked event loop runs this timer before a PONG that came.
      setImmediate(() => {
        if (!waiting || !current(shared, connection)) return;
        if (heard() !== heardBefore) expect(heard());
        else drop(connection);
      });
    }, heartbeat.timeoutMs);
    deadline.unref();
  };
  const timer = setInterval(() => {
    if (!current(shared, connection)) {
      clearInterval(timer);
      return;
    }
    if (waiting || connection.status !== 'ready') return;
    waiting = true;
    expect(heard());
    connection.ping().then(done, done);
  }, heartbeat.everyMs);
  timer.unref();
  return timer;
}

/** Drops a connection that is in use but useless, for the next to be opened. */
function drop(connection: Redis): void {
  // Destroyed, not ended: a FIN to a dead peer would wait for an answer that never comes.
  if (connection.stream) connection.stream.destroy();
  else connection.disconnect(true);
}

/**
 * A Cluster's node removed from it while it keeps running (a scale-down) no longer hears what the
 * others publish, and nothing fails. After each refresh of the Cluster's slots (a MOVED after slots
 * moved, a reconnect), the subscriber moves when its node is no longer listed. The address is
 * compared both as configured and as connected: a startup node given by name is listed by its IP.
 */
function watchClusterNodes(cluster: Cluster, shared: SharedSubscriber): void {
  cluster.on('refresh', () => {
    const { connection } = shared;
    if (!current(shared, connection) || connection.status !== 'ready') return;
    const nodes = cluster.nodes('all');
    const { host, port } = connection.options;
    const remote = connection.stream?.remoteAddress;
    const listed = nodes.some(
      (node) => node.options.port === port && (node.options.host === host || node.options.host === remote),
    );
    if (nodes.length > 0 && !listed) drop(connection);
  });
}

/**
 * The app closed its client itself (quit/disconnect): the subscriber must not keep the process
 * alive, but an app may connect that client again, and its channels (an L1's invalidations) must
 * then be heard again, so they are kept, to be subscribed on a new connection (`unpark`).
 * `closeRedis` is final instead (see `takeSubscriber`).
 */
function park(redis: RedisClient, shared: SharedSubscriber): void {
  if (subscribers.get(redis) !== shared || shared.parked) return;
  shared.parked = true;
  clearTimeout(shared.reopen);
  for (const state of shared.channels.values()) {
    clearTimeout(state.retry);
    state.subscribed = false;
    // A SUBSCRIBE in flight dies with the connection; its outcome no longer counts.
    state.pending = undefined;
  }
  shared.connection.disconnect();
}

/** The app connected its client again: the channels go on a new connection. */
function unpark(redis: RedisClient, shared: SharedSubscriber): void {
  if (!shared.parked || subscribers.get(redis) !== shared || closedClients.has(redis)) return;
  shared.parked = false;
  wire(redis, shared, openSubscriberConnection(redis));
}

/**
 * ioredis leaves manuallyClosing set when a client closed by the app is connected again: only a
 * client not back counts.
 */
function closedByApp(redis: RedisClient): boolean {
  return (redis as unknown as { manuallyClosing?: boolean }).manuallyClosing === true && !coming(redis);
}

function parkIfClosed(redis: RedisClient, shared: SharedSubscriber, connection: RedisClient): boolean {
  if (!current(shared, connection) || !closedByApp(redis)) return false;
  park(redis, shared);
  return true;
}

/**
 * Follows the client's own life: its end parks the subscriber, its 'ready' brings it back. A client
 * closed while reconnecting never ends (redis/ioredis#1247) and nothing tells: the subscriber looks
 * each time it tries again itself (see `wire`), and, while the client reconnects, every half second
 * (the subscriber may be connected all along).
 */
function watchClient(redis: RedisClient, shared: SharedSubscriber): void {
  let watching: NodeJS.Timeout | undefined;
  const stopWatching = () => {
    clearInterval(watching);
    watching = undefined;
  };
  redis.on('reconnecting', () => {
    if (watching || shared.parked || shared.closed) return;
    watching = setInterval(() => {
      if (shared.parked || shared.closed || subscribers.get(redis) !== shared) stopWatching();
      else if (closedByApp(redis)) {
        stopWatching();
        park(redis, shared);
      }
    }, CLOSED_WATCH_MS);
    watching.unref();
  });
  redis.on('end', () => {
    stopWatching();
    park(redis, shared);
  });
  redis.on('ready', () => {
    stopWatching();
    unpark(redis, shared);
  });
}

function stateOf(shared: SharedSubscriber, channel: string): ChannelState {
  let state = shared.channels.get(channel);
  if (!state) {
    let markSubscribed!: () => void;
    const whenSubscribed = new Promise<void>((resolve) => {
      markSubscribed = resolve;
    });
    state = {
      handlers: new Set(),
      subscribed: false,
      failures: 0,
      landed: new Set(),
      failed: new Set(),
      whenSubscribed,
      markSubscribed,
    };
    shared.channels.set(channel, state);
  }
  return state;
}

/** SUBSCRIBE, once for every caller waiting on the channel. */
function attempt(shared: SharedSubscriber, channel: string, state: ChannelState): Promise<void> {
  if (state.subscribed) return Promise.resolve();
  if (state.pending) return state.pending;
  const { connection } = shared;
  const pending: Promise<void> = connection.subscribe(channel).then(
    () => {
      // Parked meanwhile: the channel is subscribed again on the next connection.
      if (state.pending !== pending) return;
      state.pending = undefined;
      state.subscribed = true;
      if (state.handlers.size === 0) {
        // Everyone left while it was on its way.
        void forget(shared, channel, state);
        return;
      }
      const gap = state.failures > 0;
      state.failures = 0;
      state.markSubscribed();
      if (gap) for (const hook of state.landed) safely(hook);
    },
    (error: unknown) => {
      // Closed on purpose (closeRedis, the app's quit): nothing to report or retry. A connection that
      // ended by itself (a Cluster node down) is a failure like any other.
      if (state.pending !== pending || shared.parked || shared.closed) {
        if (state.pending === pending) state.pending = undefined;
        throw error;
      }
      state.pending = undefined;
      state.failures++;
      state.lastError = error;
      if (state.failures === 1) for (const hook of state.failed) safely(() => hook(error));
      // Still wanted: a subscriber's first SUBSCRIBE that fails gives up (it rejects and `release`
      // drops the channel), but once registered, a handler keeps it wanted until it unsubscribes.
      if (state.handlers.size > 0) retryLater(shared, channel, state);
      else void forget(shared, channel, state);
      throw error;
    },
  );
  state.pending = pending;
  return pending;
}

function retryLater(shared: SharedSubscriber, channel: string, state: ChannelState): void {
  clearTimeout(state.retry);
  const delay = Math.min(MAX_RETRY_MS, 500 * 2 ** Math.min(state.failures - 1, 6));
  state.retry = setTimeout(() => {
    state.retry = undefined;
    if (shared.parked || shared.closed || shared.channels.get(channel) !== state) return;
    if (state.handlers.size > 0) attempt(shared, channel, state).catch(() => {});
  }, delay);
  state.retry.unref();
}

function register(
  shared: SharedSubscriber,
  channel: string,
  state: ChannelState,
  handler: MessageHandler,
  hook: (() => void) | undefined,
): () => Promise<void> {
  if (hook) shared.reconnectHooks.add(hook);
  return async () => {
    if (hook) shared.reconnectHooks.delete(hook);
    await release(shared, channel, state, handler);
  };
}

function release(
  shared: SharedSubscriber,
  channel: string,
  state: ChannelState,
  handler: MessageHandler,
): Promise<void> {
  state.handlers.delete(handler);
  // A SUBSCRIBE still on its way cleans up when it lands (or fails).
  if (state.handlers.size > 0 || state.pending) return Promise.resolve();
  return forget(shared, channel, state);
}

/** Drops the channel: nobody wants it any more. */
function forget(shared: SharedSubscriber, channel: string, state: ChannelState): Promise<void> {
  clearTimeout(state.retry);
  if (shared.channels.get(channel) === state) shared.channels.delete(channel);
  if (!state.subscribed) return Promise.resolve();
  state.subscribed = false;
  if (shared.connection.status !== 'ready') return Promise.resolve();
  return shared.connection.unsubscribe(channel).then(
    () => {},
    () => {},
  );
}

function safely(hook: () => void): void {
  try {
    hook();
  } catch {
    // A hook's failure is its own.
  }
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
