import { breakerFor, type CircuitBreaker } from './breaker';
import { isCluster, type RedisClient } from './client';
import { RedisRefusedError, RedisTimeoutError, RedisUnavailableError } from './errors';
import { emitKitEvent, hasKitListeners, type KitComponent } from './events';
import { endOne, startOne } from './pending-work';
import { withoutCommandArgs } from './redact';
import { leaveReplica, READONLY_REPLY } from './replica';

// One Redis operation on the request path, bounded and classified: `guarded()` runs it under a
// timeout and the breaker of the node it touches (breaker.ts), tells an outage from a refusal, and
// follows what a Cluster redirect or a replica's refusal says about the connection.

// Replies of a server that cannot serve anything right now: they trip the breaker. Other error
// replies (OOM, READONLY, MISCONF, NOREPLICAS, TRYAGAIN during a slot migration, WRONGTYPE, NOPERM…)
// come at once from a responsive server that refuses this call, while others may still succeed.
const AVAILABILITY_REPLY = /^(LOADING|BUSY|CLUSTERDOWN|MASTERDOWN)\b/;

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

/** ioredis's refusal, before sending, of a command on a RESP2 connection in subscriber mode. */
function isSubscriberModeError(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith('Connection in subscriber mode');
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
  // Always read: a listener may subscribe while the call is in flight, and its duration must be real.
  const started = performance.now();
  return new Promise<T>((resolve, reject) => {
    // closeRedis waits for it (pending-work.ts), within its budget: ended where `settled` is set.
    const work = startOne(redis);
    let settled = false;
    const timer = setTimeout(() => {
      // On a busy event loop the reply may already sit in the socket, unread: timers run before I/O
      // callbacks, so give the poll phase one turn before declaring Redis slow.
      setImmediate(() => {
        if (settled) return;
        settled = true;
        endOne(work);
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
        endOne(work);
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
      endOne(work);
      clearTimeout(timer);
      breaker.success();
      report(options, started);
      resolve(value);
    };
    const fail = (error: unknown): void => {
      if (settled) return;
      withoutCommandArgs(error);
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
      endOne(work);
      clearTimeout(timer);
      if (isCallerError(error)) {
        // A programming error on our side of the wire (a serializer refusing a value): the
        // server may never have seen the call, so it neither trips nor closes the breaker.
        breaker.release();
        report(options, started, error as Error);
        reject(error);
      } else if (isSubscriberModeError(error)) {
        // The app ran SUBSCRIBE on this client (RESP2) after giving it to the kit: ioredis refuses
        // every other command without sending it. Not an outage (Redis is fine, and the breaker is
        // every middleware's), and nothing to wait out: it lasts until the app unsubscribes.
        breaker.release();
        const refused = new RedisRefusedError(
          'the Redis client is in subscriber mode (the app ran SUBSCRIBE on it with protocol 2), so it refuses every other command; give the kit a client of its own: redis.duplicate()',
          { cause: error },
        );
        report(options, started, refused);
        reject(refused);
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
