import type { EventEmitter } from 'node:events';
import type { ServerResponse } from 'node:http';
import onFinished from 'on-finished';

/** What a response goes out on: a socket, or a background refresh's sink. */
type Wire = EventEmitter & { readonly destroyed: boolean };

const waiting = new WeakMap<Wire, Set<() => void>>();

/**
 * Calls `fn` once when `wire` closes (at once if it already has), until the returned function is
 * called. A response queued behind another on its connection (HTTP pipelining) gets neither 'close'
 * nor `destroyed` when that connection dies: its connection's 'close' is all that tells it. Every
 * response and kit layer waiting on one connection shares one listener on it, so a client
 * pipelining many requests does not pile up listeners (Node warns past 10).
 */
export function onWireClose(wire: Wire | null | undefined, fn: () => void): () => void {
  if (!wire) return () => {};
  if (wire.destroyed) {
    fn();
    return () => {};
  }
  const callbacks = waiting.get(wire) ?? watch(wire);
  callbacks.add(fn);
  return () => {
    callbacks.delete(fn);
  };
}

// A function of its own: the listener, which lives as long as the connection, must not share a
// closure scope with the first caller's `fn` (V8 would keep that request alive with it).
function watch(wire: Wire): Set<() => void> {
  const callbacks = new Set<() => void>();
  waiting.set(wire, callbacks);
  wire.once('close', () => {
    waiting.delete(wire);
    for (const callback of callbacks) callback();
  });
  return callbacks;
}

/**
 * Calls `fn` once the response is over (at once if it already is): on-finished, or its connection's
 * 'close', which is all a response queued behind another (pipelining) gets when that connection dies.
 */
export function onResponseOver(res: ServerResponse, fn: () => void): void {
  let called = false;
  let unwatch = () => {};
  const once = () => {
    if (called) return;
    called = true;
    unwatch();
    fn();
  };
  unwatch = onWireClose(res.socket ?? res.req?.socket, once);
  if (!called) onFinished(res, once);
}
