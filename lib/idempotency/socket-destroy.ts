import { AsyncLocalStorage } from 'node:async_hooks';
import type { Socket } from 'node:net';
import type { Response } from 'express';

// Who destroyed a connection: capture.ts counts a destroy as the app's own answer ("no answer is
// coming") only when it was made for this response, not by a neighbour sharing the connection.

/**
 * The response whose handler is running (set around next()), to tell who called socket.destroy().
 * Weakly: a long-lived resource created in a handler (a pool's connection) keeps the context.
 */
export const runningFor = new AsyncLocalStorage<WeakRef<Response>>();

type DestroyWatcher = (args: unknown[], socket: Socket) => void;
const destroyWatchers = new WeakMap<Socket, Set<DestroyWatcher>>();

/**
 * Tells `watcher` when the socket is destroyed, until the returned function is called. One socket
 * carries several requests (keep-alive, pipelining, a second idempotency layer on one request), and
 * their captures overlap: one wrapper per socket, for its life, serves them all. A wrapper per
 * capture could not always step aside in order, and each left standing kept its request alive and
 * deepened every later destroy() call, until one overflowed the stack.
 */
export function watchSocketDestroy(socket: Socket, watcher: DestroyWatcher): () => void {
  const watchers = destroyWatchersOf(socket);
  watchers.add(watcher);
  return () => watchers.delete(watcher);
}

// Apart from watchSocketDestroy: a closure made there would share its scope, and so hold the first
// watcher (and that one's request) for the socket's life.
function destroyWatchersOf(socket: Socket): Set<DestroyWatcher> {
  const known = destroyWatchers.get(socket);
  if (known) return known;
  const watchers = new Set<DestroyWatcher>();
  destroyWatchers.set(socket, watchers);
  const destroy = socket.destroy;
  socket.destroy = function destroyWatched(this: Socket, ...args: unknown[]) {
    for (const each of watchers) each(args, this);
    return (destroy as (...a: unknown[]) => Socket).apply(this, args);
  } as Socket['destroy'];
  return watchers;
}
