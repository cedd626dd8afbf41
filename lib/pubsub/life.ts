import type { Cluster, Redis } from 'ioredis';
import type { RedisClient } from '../client';
import { attempt } from './channels';
import { openSubscriberConnection } from './open';
import {
  closedClients,
  coming,
  current,
  markUnsubscribed,
  type SharedSubscriber,
  safely,
  subscribers,
} from './state';

// The subscriber connection's life: its events, heartbeat, moves between Cluster nodes, and the
// client's own life (parked while the app has closed it, back when it connects it again).

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

export function wire(redis: RedisClient, shared: SharedSubscriber, connection: Redis): void {
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
  connection.on('error', (error: unknown) => {
    // Not logged here: a Redis that is down shows on the main client already. Kept for a failing
    // SUBSCRIBE to report, for what refuses only this connection (maxclients, an ACL).
    if (current(shared, connection)) shared.connectionError = error;
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
    for (const state of channels.values()) markUnsubscribed(state);
    // Deaf from now until the channels are subscribed again: state kept in step by messages (an L1)
    // must not be trusted meanwhile, as other instances go on publishing.
    for (const hook of shared.dropHooks) safely(hook);
  });
  connection.on('ready', () => {
    if (!current(shared, connection)) return;
    shared.drops = 0;
    shared.connectionError = undefined;
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
export function watchClusterNodes(cluster: Cluster, shared: SharedSubscriber): void {
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
    markUnsubscribed(state);
    // A SUBSCRIBE in flight dies with the connection; its outcome no longer counts.
    state.pending = undefined;
  }
  shared.connection.disconnect();
}

/** The app connected its client again: the channels go on a new connection. */
export function unpark(redis: RedisClient, shared: SharedSubscriber): void {
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
export function watchClient(redis: RedisClient, shared: SharedSubscriber): void {
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
