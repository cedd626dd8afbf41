import { checkClient, type RedisClient } from '../client';
import { type Duration, MAX_TIMER_MS, toMs } from '../duration';
import { checkKnownOptions, isKitError, optionError, RedisUnavailableError, shown } from '../errors';
import { guarded } from '../guarded';
import { checkPrefix, DEFAULT_PREFIX, taggedKey } from '../keys';
import { defineScript, LUA_NOW_MS, runScript } from '../scripts';
import { newToken } from '../token';

// Only the owner may release or extend: compare the token and act in one script.
const RELEASE = defineScript(
  'lock_release',
  1,
  `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`,
);

const EXTEND = defineScript(
  'lock_extend',
  1,
  `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`,
);

// Taking a lock (both scripts below, and the cache lookup's fill lock): SET NX PX, atomic, expiring on its own if the owner dies. Finding the lock
// already holding `token` means this is a copy ioredis sent again after the connection dropped
// before the reply (the first one landed): the lock is the caller's, not someone else's.
export const takeLockLua = (key: string, token: string, ttl: string) =>
  `(redis.call('SET', ${key}, ${token}, 'NX', 'PX', ${ttl}) or redis.call('GET', ${key}) == ${token})`;
const TAKE = takeLockLua('KEYS[1]', 'ARGV[1]', 'ARGV[2]');

const LOCK = defineScript(
  'lock_acquire_v2',
  1,
  `if ${TAKE} then return 1 end
return 0`,
);

/** Takes the lock `key` for `token` for `ttlMs`; false when another holds it. */
export async function acquireLock(
  redis: RedisClient,
  key: string,
  token: string,
  ttlMs: number,
): Promise<boolean> {
  return Number(await runScript<number>(redis, LOCK, [key], [token, ttlMs])) === 1;
}

// The same, answering the Redis time (also when another holds the lock: a fill that gives up
// waiting checks invalidations since then), and whether KEYS[2] (the entry a lookup just read, or
// the lock again) still exists: an invalidation may have deleted it between the two round trips.
const LOCK_AT = defineScript(
  'lock_acquire_at_v4',
  2,
  `${LUA_NOW_MS}
local taken = 0
if ${TAKE} then taken = 1 end
return {now_ms, taken, redis.call('EXISTS', KEYS[2])}`,
);

/**
 * Takes the lock like {@link acquireLock}; resolves whether it did, the Redis time (ms), and whether
 * `entryKey` (same slot) is gone by then.
 */
export async function acquireLockAt(
  redis: RedisClient,
  key: string,
  token: string,
  ttlMs: number,
  entryKey = key,
): Promise<{ taken: boolean; at: number; entryGone: boolean }> {
  const [at, taken, exists] = await runScript<[number, number, number]>(
    redis,
    LOCK_AT,
    [key, entryKey],
    [token, ttlMs],
  );
  return { taken: Number(taken) === 1, at: Number(at), entryGone: Number(exists) === 0 };
}

/**
 * Runs `send`, a command that may take the lock `key` for `token`, through `call` (a guarded call).
 * A call that gave up without an answer (Redis slow, not down) may still run once Redis catches up
 * and leave a lock nobody owns for its whole TTL, so the next caller would wait for nothing: the token
 * is released once the command has settled. After the reply, so the release cannot overtake the
 * script re-sent on NOSCRIPT; straight on the client, because by then the caller has moved on and an
 * open breaker must not skip it.
 */
export async function mayTakeLock<T>(
  redis: RedisClient,
  key: string,
  token: string,
  call: (operation: () => Promise<T>) => Promise<T>,
  send: () => Promise<T>,
): Promise<T> {
  let sent: Promise<T> | undefined;
  try {
    return await call(() => {
      sent = send();
      return sent;
    });
  } catch (error) {
    if (sent && error instanceof RedisUnavailableError) {
      const release = () => {
        releaseLock(redis, key, token).catch(() => {});
      };
      sent.then(release, release);
    }
    throw error;
  }
}

export async function releaseLock(redis: RedisClient, key: string, token: string): Promise<boolean> {
  return (await runScript<number>(redis, RELEASE, [key], [token])) === 1;
}

export async function extendLock(
  redis: RedisClient,
  key: string,
  token: string,
  ttlMs: number,
): Promise<boolean> {
  return (await runScript<number>(redis, EXTEND, [key], [token, ttlMs])) === 1;
}

/**
 * Keeps a lock alive while work runs: extends it every third of its TTL; calls `onLost` once if the
 * lock turned out to belong to someone else (it expired, e.g. after a long GC pause or a partition).
 */
export function keepAlive(
  redis: RedisClient,
  key: string,
  token: string,
  ttlMs: number,
  onLost: () => void,
  timeoutMs: number,
): () => void {
  let stopped = false;
  const timer = setInterval(
    () => {
      guarded(redis, () => extendLock(redis, key, token, ttlMs), { timeoutMs, component: 'cache', key }).then(
        (ok) => {
          if (!ok && !stopped) {
            stopped = true;
            clearInterval(timer);
            onLost();
          }
        },
        () => {
          // Redis is sick: keep trying; the lock expires on its own if it never comes back.
        },
      );
    },
    Math.floor(ttlMs / 3),
  );
  timer.unref?.();
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}

/**
 * Shortest lock lifetime accepted (withLock's `ttl`, the cache's `lockTimeout`). A lock renewed every
 * third of its life is lost by a live owner whose renewal is late by two thirds: a round trip and an
 * event-loop stall (a GC pause) must fit. At 10 ms they often did not.
 */
export const MIN_LOCK_MS = 100;

/** Options of {@link withLock}. */
export interface WithLockOptions {
  /**
   * Lifetime of the lock; it is extended while `fn` runs, and expires this long after its owner
   * dies. Default 10 s; at least 100 ms.
   */
  ttl?: Duration | undefined;
  /** How long to wait for a busy lock before rejecting with {@link LockBusyError}. Default: `ttl`. 0: don't wait. */
  wait?: Duration | undefined;
  /** Key prefix. Default `'erk:'`. */
  prefix?: string | undefined;
  /** Longest wait for one Redis call. Default 1 s. */
  timeout?: Duration | undefined;
}

const LOCK_KNOWN = new Set(['ttl', 'wait', 'prefix', 'timeout']);

// redlock / node-redis-lock names people will bring along.
const LOCK_RENAMED: Record<string, string> = {
  duration: 'use "ttl" (the lock\'s lifetime)',
  timeoutMs: 'use "ttl" for the lock\'s lifetime, "wait" for how long to wait for it',
  retryCount: 'use "wait" (how long to wait for a busy lock)',
  retryDelay: 'use "wait" (how long to wait for a busy lock)',
  retryJitter: 'use "wait" (how long to wait for a busy lock)',
  automaticExtensionThreshold: 'the lock is extended every ttl / 3 while fn runs',
};

// Codes `instanceof` accepts from another copy of the kit (see isKitError).
const LOCK_BUSY: ReadonlySet<string> = new Set(['ERK_LOCK_BUSY']);
const LOCK_LOST: ReadonlySet<string> = new Set(['ERK_LOCK_LOST']);

/** {@link withLock} could not get the lock within `wait`. */
export class LockBusyError extends Error {
  static override [Symbol.hasInstance](value: unknown): boolean {
    return isKitError(LockBusyError, value, LOCK_BUSY);
  }
  readonly code = 'ERK_LOCK_BUSY';
  constructor(readonly lockName: string) {
    super(`express-redis-kit: lock "${lockName}" is held by someone else`);
    this.name = 'LockBusyError';
  }
}

/** The lock expired or was taken over while `fn` ran; `signal.reason` of the `fn` call. */
export class LockLostError extends Error {
  static override [Symbol.hasInstance](value: unknown): boolean {
    return isKitError(LockLostError, value, LOCK_LOST);
  }
  readonly code = 'ERK_LOCK_LOST';
  constructor(readonly lockName: string) {
    super(`express-redis-kit: lock "${lockName}" was lost while its work ran`);
    this.name = 'LockLostError';
  }
}

/**
 * Runs `fn` while holding a Redis lock called `name`, across every process using this Redis.
 * The lock is owned by a random token: it is extended while `fn` runs and released (atomic
 * check-and-delete) only by its owner, so a slow owner never deletes a lock that expired and went to
 * someone else. If ownership is lost anyway, `signal` aborts with {@link LockLostError}.
 */
export async function withLock<T>(
  redis: RedisClient,
  name: string,
  fn: (signal: AbortSignal) => T | Promise<T>,
  options: WithLockOptions = {},
): Promise<T> {
  checkClient(redis);
  if (typeof name !== 'string' || name === '')
    throw new TypeError('express-redis-kit: withLock needs a lock name');
  if (typeof fn !== 'function') throw new TypeError('express-redis-kit: withLock needs a function to run');
  if (typeof options !== 'object' || options === null) {
    throw optionError('options', `must be an object; got ${shown(options)}`, "e.g. { ttl: '30s' }");
  }
  checkKnownOptions(options, LOCK_KNOWN, 'withLock', LOCK_RENAMED);
  // The lock is extended every ttl / 3, a timer: that must stay within Node's longest one.
  const ttlMs = toMs(options.ttl ?? 10_000, 'ttl', { min: MIN_LOCK_MS, max: 3 * MAX_TIMER_MS });
  // A deadline polled with short sleeps, not a timer: any length works.
  const waitMs = toMs(options.wait ?? ttlMs, 'wait', { allowZero: true });
  const timeoutMs = toMs(options.timeout ?? 1000, 'timeout', { max: MAX_TIMER_MS });
  const key = taggedKey(checkPrefix(options.prefix ?? DEFAULT_PREFIX), 'lock', name);
  const token = newToken();
  const call = <R>(op: () => Promise<R>) => guarded(redis, op, { timeoutMs, component: 'cache', key });

  // Monotonic: a wall clock stepped back would stretch the wait by the step.
  const deadline = performance.now() + waitMs;
  let delay = 10;
  const take = () => mayTakeLock(redis, key, token, call, () => acquireLock(redis, key, token, ttlMs));
  while (!(await take())) {
    if (performance.now() >= deadline) throw new LockBusyError(name);
    await sleep(Math.min(delay, Math.max(1, deadline - performance.now())));
    delay = Math.min(delay * 2, 200);
  }
  const controller = new AbortController();
  const stop = keepAlive(
    redis,
    key,
    token,
    ttlMs,
    () => controller.abort(new LockLostError(name)),
    timeoutMs,
  );
  try {
    return await fn(controller.signal);
  } finally {
    stop();
    // If release fails (Redis down) the lock still expires after ttl.
    await call(() => releaseLock(redis, key, token)).catch(() => false);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
