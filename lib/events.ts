import diagnosticsChannel from 'node:diagnostics_channel';
import { withoutCommandArgs } from './redact';

/** Which part of the kit an event comes from. */
export type KitComponent = 'rate-limit' | 'cache' | 'idempotency' | 'session' | 'redis';

/**
 * One thing the kit did or saw. `type` is component-specific, e.g. `hit`, `miss`, `stale`, `bypass`,
 * `denied`, `replay`, `conflict`, `mismatch`, `redis-error`, `redis-call`, `breaker-open`.
 */
export interface KitEvent {
  component: KitComponent;
  type: string;
  /** Optional name the user gave the middleware instance (option `name`). */
  name?: string;
  /** Duration of the Redis call, for `redis-call` events. */
  durationMs?: number;
  /** Whether the Redis call succeeded, for `redis-call` events. */
  ok?: boolean;
  error?: Error;
  [detail: string]: unknown;
}

/** The `node:diagnostics_channel` name every kit event is published on. */
export const KIT_CHANNEL = 'express-redis-kit';

const channel = diagnosticsChannel.channel(KIT_CHANNEL);

/** Publishes an event; costs one property read when nobody listens. */
export function emitKitEvent(event: KitEvent): void {
  if (!channel.hasSubscribers) return;
  if (event.error) withoutCommandArgs(event.error);
  channel.publish(event);
}

/** True when someone listens, so callers can skip building event objects. */
export function hasKitListeners(): boolean {
  return channel.hasSubscribers;
}

/**
 * Subscribes to every event of the kit (metrics, logs). Returns the unsubscribe function.
 * Listener errors are swallowed so observability never breaks a request.
 */
export function onKitEvent(listener: (event: KitEvent) => void): () => void {
  const wrapped = (message: unknown) => {
    try {
      listener(message as KitEvent);
    } catch {
      // A metrics/log bug must not turn into a failed request.
    }
  };
  channel.subscribe(wrapped);
  return () => {
    channel.unsubscribe(wrapped);
  };
}
