import calculateSlot from 'cluster-key-slot';
import type { Cluster } from 'ioredis';
import { isCluster, type RedisClient } from './client';
import { MAX_TIMER_MS } from './duration';
import {
  checkKnownOptions,
  numberOptionError,
  optionError,
  RedisRefusedError,
  RedisTimeoutError,
  RedisUnavailableError,
  shown,
} from './errors';
import { emitKitEvent, hasKitListeners, type KitComponent } from './events';

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
  if (!options || typeof options !== 'object') {
    throw optionError('options', `must be an object; got ${shown(options)}`, 'e.g. { cooldownMs: 500 }');
  }
  checkKnownOptions(options, BREAKER_KNOWN, 'configureBreaker', {
    threshold: 'use "failureThreshold"',
    cooldown: 'use "cooldownMs"',
    resetTimeout: 'use "cooldownMs"',
  });
  const { failureThreshold = DEFAULT_BREAKER.failureThreshold, cooldownMs = DEFAULT_BREAKER.cooldownMs } =
    options;
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

// Reply errors that mean "this server cannot serve now" (including out of memory, or unable to
// persist) rather than "your command is wrong": the fail mode applies.
// Replies of a server that cannot serve anything right now: they trip the breaker. Other error
// replies (OOM, READONLY, MISCONF, NOREPLICAS, TRYAGAIN during a slot migration, WRONGTYPE, NOPERM…)
// come at once from a responsive server that refuses this call, while others may still succeed.
const AVAILABILITY_REPLY = /^(LOADING|BUSY|CLUSTERDOWN|MASTERDOWN)\b/;

/** A replica's answer to a write: the client is connected to a former master (see connection.ts). */
export const READONLY_REPLY = /^READONLY\b/;

const reconnectedAt = new WeakMap<object, number>();

/**
 * The app's own client on a replica (a failover behind a stable address left its socket on the old
 * master) refuses every write until it connects again; createRedis's clients do that themselves
 * (reconnectOnError), and so does any client given its own reconnectOnError. At most once a second.
 */
function leaveReplica(redis: RedisClient): void {
  if (isCluster(redis) || redis.options.reconnectOnError) return;
  const now = performance.now();
  if (now - (reconnectedAt.get(redis) ?? Number.NEGATIVE_INFINITY) < 1000) return;
  reconnectedAt.set(redis, now);
  if (redis.status === 'ready') redis.disconnect(true);
}

/** ioredis rejects a command that outlived its `commandTimeout` with this plain Error. */
function isClientTimeout(error: unknown): boolean {
  return error instanceof Error && error.message === 'Command timed out';
}

export function clientTimeoutMs(redis: RedisClient): number | undefined {
  const options = isCluster(redis) ? redis.options.redisOptions : redis.options;
  return options?.commandTimeout;
}

function isCallerError(error: unknown): boolean {
  return error instanceof TypeError || error instanceof RangeError || error instanceof SyntaxError;
}

function isAvailabilityError(error: unknown): boolean {
  if (!(error instanceof Error)) return true;
  if (error.name === 'ReplyError') return AVAILABILITY_REPLY.test(error.message);
  return true;
}

export interface GuardOptions {
  /** Upper bound for the whole call, in ms. */
  timeoutMs: number;
  component: KitComponent;
  /** Instance name, for events. */
  name?: string;
  /**
   * A key the operation touches (all of its keys share a hash tag): on a Cluster, picks the breaker
   * of the master serving it. Leave out for operations that span slots.
   */
  key?: string;
  /**
   * Every call of the operation may be sent again (reads, UNLINK): one that a Cluster redirected
   * (MOVED/ASK) is resent even when the operation spans slots, as one on a single key always is.
   */
  repeatable?: boolean;
}

const unsent = new WeakSet<object>();

/**
 * Whether a `guarded()` call that rejected surely did not run: Redis refused it, or it was never sent
 * (breaker open, client closed). A timeout or a lost connection may have run it.
 */
export function didNotRun(error: unknown): boolean {
  return (
    error instanceof RedisRefusedError || (typeof error === 'object' && error !== null && unsent.has(error))
  );
}

/**
 * Runs one Redis operation on the request path: fails at once while the client's breaker is open,
 * never waits longer than `timeoutMs`, feeds the breaker, and emits `redis-call`/`redis-error`
 * events. Rejects with {@link RedisUnavailableError} when Redis cannot answer, {@link RedisTimeoutError}
 * when it answers too late, and {@link RedisRefusedError} when it answers with an error reply that
 * says nothing about its health (those do not trip the breaker); errors raised on this side of the
 * wire (a TypeError from a serializer) pass through unchanged.
 */
export function guarded<T>(
  redis: RedisClient,
  operation: () => Promise<T>,
  options: GuardOptions,
): Promise<T> {
  const breaker = breakerFor(redis, options.key);
  if (redis.status === 'end' || !breaker.allow()) {
    const error = new RedisUnavailableError(
      redis.status === 'end' ? 'the Redis client is closed' : 'Redis circuit breaker is open',
    );
    unsent.add(error);
    emitKitEvent({ component: options.component, name: options.name, type: 'redis-error', error });
    return Promise.reject(error);
  }
  const started = hasKitListeners() ? performance.now() : 0;
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      // On a busy event loop the reply may already sit in the socket, unread: timers run before I/O
      // callbacks, so give the poll phase one turn before declaring Redis slow.
      setImmediate(() => {
        if (settled) return;
        settled = true;
        const error = new RedisTimeoutError(options.timeoutMs);
        report(options, started, error);
        reject(error);
        judgeLate(redis, breaker, pending, options.timeoutMs);
      });
    }, options.timeoutMs);
    timer.unref?.();
    let pending: Promise<T>;
    let redirected = false;
    const send = (): void => {
      try {
        pending = operation();
      } catch (error) {
        // Thrown before anything reached Redis (e.g. a value JSON cannot encode): the caller's bug,
        // not an outage, so it must not feed the breaker shared by every middleware on this client.
        settled = true;
        clearTimeout(timer);
        breaker.release();
        report(options, started, error as Error);
        reject(error);
        return;
      }
      pending.then(settle, fail);
    };
    const settle = (value: T): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      breaker.success();
      report(options, started);
      resolve(value);
    };
    const fail = (error: unknown): void => {
      if (settled) return;
      const resendable = options.key !== undefined || options.repeatable === true;
      if (!redirected && resendable && isCluster(redis) && isRedirect(error)) {
        // ioredis 6 does not follow a redirect in an auto-pipelined batch that also holds a
        // successful write. The call did not run: learn where the slot lives now and send it
        // again, once, within the same budget. Only an operation on one slot (it names its key), or
        // one safe to repeat: one that spans slots may have run elsewhere, and must not run twice.
        redirected = true;
        redis.refreshSlotsCache(() => {
          if (!settled) send();
        });
        return;
      }
      settled = true;
      clearTimeout(timer);
      if (isCallerError(error)) {
        // A programming error on our side of the wire (a serializer refusing a value): the
        // server may never have seen the call, so it neither trips nor closes the breaker.
        breaker.release();
        report(options, started, error as Error);
        reject(error);
      } else if (isAvailabilityError(error)) {
        breaker.failure();
        // ioredis's own commandTimeout (createRedis sets one) often fires before ours: it is the
        // same event, and callers that clean up after a late-landing command must know it.
        const wrapped = isClientTimeout(error)
          ? new RedisTimeoutError(clientTimeoutMs(redis) ?? options.timeoutMs, { cause: error })
          : new RedisUnavailableError(`Redis call failed: ${(error as Error)?.message ?? error}`, {
              cause: error,
            });
        report(options, started, wrapped);
        reject(wrapped);
      } else {
        // The server answered, so it is healthy even though the command was refused.
        breaker.success();
        if (READONLY_REPLY.test((error as Error).message ?? '')) leaveReplica(redis);
        const refused = new RedisRefusedError((error as Error).message, { cause: error });
        report(options, started, refused);
        reject(refused);
      }
    };
    send();
  });
}

/** A Cluster's `MOVED` or `ASK` reply: the slot is served (or being moved) elsewhere. */
function isRedirect(error: unknown): boolean {
  return error instanceof Error && error.name === 'ReplyError' && /^(MOVED|ASK) /.test(error.message);
}

/** How long a call the client set no `commandTimeout` for may take before it counts as an outage. */
const LATE_CAP_MS = 1000;

/**
 * The breaker's verdict on a call that ran past its caller's own budget. Budgets differ (a rate
 * limiter's 250 ms, a session's 500 ms) and the breaker is shared by every middleware on the client:
 * a Redis that answers in 300 ms is too slow for the limiter, which applies its fail mode, but
 * healthy for the sessions, which an open breaker would answer 503. So the call's own outcome
 * decides, up to the client's `commandTimeout` (or LATE_CAP_MS): a late reply is a success, an
 * outage error or no reply by then a failure.
 */
function judgeLate<T>(
  redis: RedisClient,
  breaker: CircuitBreaker,
  pending: Promise<T>,
  timeoutMs: number,
): void {
  const capMs = Math.max(clientTimeoutMs(redis) ?? LATE_CAP_MS, timeoutMs);
  let judged = false;
  const judge = (healthy: boolean) => {
    if (judged) return;
    judged = true;
    clearTimeout(cap);
    if (healthy) breaker.success();
    else breaker.failure();
  };
  // Measured from the call's start (the caller's timeout has passed), plus the turn the reply may
  // still be waiting for in the socket.
  const cap = setTimeout(() => setImmediate(() => judge(false)), Math.max(0, capMs - timeoutMs));
  cap.unref?.();
  pending.then(
    () => judge(true),
    (error: unknown) => {
      if (isCallerError(error)) {
        judged = true;
        clearTimeout(cap);
        breaker.release();
      } else judge(!isAvailabilityError(error));
    },
  );
}

function report(options: GuardOptions, started: number, error?: Error): void {
  if (!hasKitListeners()) return;
  const durationMs = performance.now() - started;
  emitKitEvent({
    component: options.component,
    name: options.name,
    type: 'redis-call',
    durationMs,
    ok: !error,
  });
  if (error) emitKitEvent({ component: options.component, name: options.name, type: 'redis-error', error });
}
