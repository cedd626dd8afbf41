import calculateSlot from 'cluster-key-slot';
import type { Cluster } from 'ioredis';
import { checkClientShape, isCluster, type RedisClient } from './client';
import { MAX_TIMER_MS } from './duration';
import { numberOptionError, shown } from './errors';
import { emitKitEvent } from './events';
import { helperOptions } from './helper-options';

/** Tuning of the per-client circuit breaker. */
export interface BreakerOptions {
  /** Consecutive failures (errors or timeouts) that open the breaker. Default 5. */
  failureThreshold: number;
  /** How long an open breaker fails calls at once before letting one probe through. Default 1000 ms. */
  cooldownMs: number;
}

const DEFAULT_BREAKER: BreakerOptions = { failureThreshold: 5, cooldownMs: 1000 };

type State = 'closed' | 'open' | 'half-open';

/**
 * One small circuit breaker per Redis client (per master node on a Cluster), shared by every
 * middleware on that client, so that during an outage requests get the fail mode at once instead of
 * each paying the full timeout.
 */
export class CircuitBreaker {
  private state: State = 'closed';
  private failures = 0;
  private openedAt = 0;
  private probing = false;

  /** `node`: the Cluster master it guards (`host:port`), named in its events. */
  constructor(
    readonly options: BreakerOptions = DEFAULT_BREAKER,
    readonly node?: string,
  ) {}

  get currentState(): State {
    return this.state;
  }

  /**
   * Whether a call may go to Redis now. In half-open state, only one probe at a time. Times are
   * monotonic: a wall clock stepped back (NTP) would hold the breaker open, every middleware on its
   * fail mode, for as long as the step.
   */
  allow(now = performance.now()): boolean {
    if (this.state === 'closed') return true;
    if (this.state === 'open') {
      if (now - this.openedAt < this.options.cooldownMs) return false;
      this.state = 'half-open';
      this.probing = false;
    }
    if (this.probing) return false;
    this.probing = true;
    return true;
  }

  /** A call that never reached Redis: tells nothing about it, but must free the half-open probe. */
  release(): void {
    this.probing = false;
  }

  success(): void {
    this.probing = false;
    this.failures = 0;
    if (this.state !== 'closed') {
      this.state = 'closed';
      emitKitEvent({ component: 'redis', type: 'breaker-closed', node: this.node });
    }
  }

  failure(now = performance.now()): void {
    this.probing = false;
    this.failures += 1;
    if (
      this.state === 'half-open' ||
      (this.state === 'closed' && this.failures >= this.options.failureThreshold)
    ) {
      this.state = 'open';
      this.openedAt = now;
      emitKitEvent({ component: 'redis', type: 'breaker-open', failures: this.failures, node: this.node });
    }
  }
}

/** A client's breakers: one for the client, plus (Cluster) one per master node. */
interface Breakers {
  options: BreakerOptions;
  client: CircuitBreaker;
  nodes: Map<string, CircuitBreaker>;
}

const breakers = new WeakMap<object, Breakers>();

// Node keys only accumulate through failovers and resharding; past this many, start over.
const MAX_NODE_BREAKERS = 256;

function breakersOf(redis: RedisClient): Breakers {
  let set = breakers.get(redis);
  if (!set) {
    set = { options: DEFAULT_BREAKER, client: new CircuitBreaker(), nodes: new Map() };
    breakers.set(redis, set);
  }
  return set;
}

/**
 * The breaker for a call on `key` (any key of the operation: they share a hash tag). On a Cluster,
 * each master node has its own, so one dead shard fails fast without taking the fail mode to keys
 * served by healthy ones. Without a key, before the slot map is known, and on standalone or sentinel
 * clients, the client's one breaker, shared by every kit middleware on it.
 */
export function breakerFor(redis: RedisClient, key?: string): CircuitBreaker {
  const set = breakersOf(redis);
  const node = key === undefined || !isCluster(redis) ? undefined : nodeOf(redis, key);
  if (node === undefined) return set.client;
  let breaker = set.nodes.get(node);
  if (!breaker) {
    if (set.nodes.size >= MAX_NODE_BREAKERS) {
      // Forget healthy nodes first: dropping an open breaker would send traffic back to a dead node.
      for (const [id, b] of set.nodes) if (b.currentState === 'closed') set.nodes.delete(id);
      if (set.nodes.size >= MAX_NODE_BREAKERS) set.nodes.clear();
    }
    breaker = new CircuitBreaker(set.options, node);
    set.nodes.set(node, breaker);
  }
  return breaker;
}

/** `host:port` of the master serving `key`'s slot, as the client currently maps it. */
export function nodeOf(cluster: Cluster, key: string): string | undefined {
  // The client prepends its keyPrefix before hashing; so must we.
  return cluster.slots[calculateSlot((cluster.options.keyPrefix ?? '') + key)]?.[0];
}

const BREAKER_KNOWN = new Set(['failureThreshold', 'cooldownMs']);

/** Replaces the breaker tuning of one client (e.g. shorter cool-down in tests); breakers start closed. */
export function configureBreaker(redis: RedisClient, options: Partial<BreakerOptions>): void {
  // A Promise (an un-awaited connectRedis()) would be tuned instead of the client, silently.
  checkClientShape(redis);
  const { failureThreshold = DEFAULT_BREAKER.failureThreshold, cooldownMs = DEFAULT_BREAKER.cooldownMs } =
    helperOptions(options, BREAKER_KNOWN, 'configureBreaker', {
      required: 'E.g. { cooldownMs: 500 }.',
      renamed: {
        threshold: 'use "failureThreshold"',
        cooldown: 'use "cooldownMs"',
        resetTimeout: 'use "cooldownMs"',
      },
    });
  if (!(Number.isSafeInteger(failureThreshold) && failureThreshold >= 1)) {
    throw numberOptionError(
      'failureThreshold',
      failureThreshold,
      `must be a whole number >= 1; got ${shown(failureThreshold)}`,
    );
  }
  if (typeof cooldownMs !== 'number' || !(cooldownMs >= 0 && cooldownMs <= MAX_TIMER_MS)) {
    throw numberOptionError(
      'cooldownMs',
      cooldownMs,
      `must be a number of ms from 0 to ${MAX_TIMER_MS}; got ${shown(cooldownMs)}`,
    );
  }
  const tuned = { failureThreshold, cooldownMs };
  breakers.set(redis, { options: tuned, client: new CircuitBreaker(tuned), nodes: new Map() });
}
