import { Counter, collectDefaultMetrics, Histogram, Registry } from 'prom-client';
import { type KitEvent, onKitEvent } from '../lib';

/** Prometheus metrics fed by the kit's own events (not by the demo guessing from status codes). */
export interface DemoMetrics {
  registry: Registry;
  /** Stops listening to kit events. */
  close(): void;
}

export function createMetrics(): DemoMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const events = new Counter({
    name: 'express_redis_kit_events_total',
    help: 'Kit events by middleware and type: hit, miss, stale, bypass, denied, replay, conflict, mismatch, …',
    labelNames: ['component', 'type'] as const,
    registers: [registry],
  });
  const redisErrors = new Counter({
    name: 'express_redis_kit_redis_errors_total',
    help: 'Redis calls that failed or timed out, or were refused by the open circuit breaker',
    labelNames: ['component'] as const,
    registers: [registry],
  });
  const latency = new Histogram({
    name: 'express_redis_kit_redis_call_duration_seconds',
    help: 'Latency of the Redis calls the middlewares make on the request path',
    labelNames: ['component', 'outcome'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [registry],
  });
  const off = onKitEvent((event: KitEvent) => {
    if (event.type === 'redis-call') {
      latency.observe(
        { component: event.component, outcome: event.ok ? 'ok' : 'error' },
        (event.durationMs ?? 0) / 1000,
      );
      return;
    }
    if (event.type === 'redis-error') redisErrors.inc({ component: event.component });
    events.inc({ component: event.component, type: event.type });
  });
  return { registry, close: off };
}
