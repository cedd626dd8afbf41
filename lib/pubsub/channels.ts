import { withoutCommandArgs } from '../redact';
import { type ChannelState, type MessageHandler, nextLanding, type SharedSubscriber, safely } from './state';

// One channel's subscription on the shared connection: SUBSCRIBE once for every caller, retried
// with backoff while it fails and wanted, dropped when the last handler leaves.

/** Longest wait between two SUBSCRIBE attempts of a channel kept wanted through failures. */
const MAX_RETRY_MS = 30_000;
export function stateOf(shared: SharedSubscriber, channel: string): ChannelState {
  let state = shared.channels.get(channel);
  if (!state) {
    state = {
      handlers: new Set(),
      subscribed: false,
      failures: 0,
      landed: new Set(),
      failed: new Set(),
      ...nextLanding(),
    };
    shared.channels.set(channel, state);
  }
  return state;
}

/** SUBSCRIBE, once for every caller waiting on the channel. */
export function attempt(shared: SharedSubscriber, channel: string, state: ChannelState): Promise<void> {
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
    (failure: unknown) => {
      const error = explained(failure, shared);
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

/**
 * ioredis rejects a command that waited through its connection's retries with "Reached the max
 * retries per request limit", which hides that it is the kit's own second connection that fails,
 * and why. Redis refusing one more client (`maxclients`) shows only as a broken pipe: it closes the
 * connection before the client reads its reason.
 */
function explained(error: unknown, shared: SharedSubscriber): unknown {
  withoutCommandArgs(error);
  withoutCommandArgs(shared.connectionError);
  // By name, not instanceof: ioredis's errors may come from another realm (a test runner's).
  const why = shared.connectionError as { message?: unknown; code?: unknown } | undefined;
  if ((error as { name?: unknown } | null)?.name !== 'MaxRetriesPerRequestError') return error;
  // Redis may close the connection before any socket error is seen (on a busy machine, often): the
  // explanation holds all the same.
  const reason = typeof why?.message === 'string' ? why.message : 'it closed before it could subscribe';
  const message =
    `the kit's pub/sub connection (one more connection to Redis) failed: ${reason}; ` +
    "if the app's other commands work, Redis may be refusing more clients (maxclients) or this one (ACL)";
  // Its name kept: code that told this failure apart by it still does.
  return Object.assign(new Error(message, { cause: why ?? error }), {
    name: 'MaxRetriesPerRequestError',
    code: why?.code,
  });
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

export function register(
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

export function release(
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
