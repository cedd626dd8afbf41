import { isCluster, type RedisClient } from './client';
import { refusalOf } from './connection-events';
import type { RedisTarget } from './connection-options';
import { NotMasterError, type RedisHealth } from './health';
import { maskUrl } from './mask-url';
import { withoutCommandArgs } from './redact';

// connectRedis's first connection, seen from the outside: what happened while it tried, and what
// to tell the user when it failed. connection.ts makes, probes and closes the client.

/** The target as a log line or message may show it: passwords masked, node objects by address. */
export function describeTarget(target: RedisTarget): string {
  if (target.kind === 'sentinel') return `sentinel master "${target.sentinel.name}"`;
  if (target.kind === 'url') return maskUrl(target.url);
  // Host and port only: a node object may carry a password of its own.
  return `cluster ${target.nodes.map((n) => (typeof n === 'string' ? maskUrl(n) : `${n.host}:${n.port}`)).join(', ')}`;
}

/** What a first connection went through, recorded from its events until `stop()`. */
export interface Attempt {
  /**
   * Until the client is first ready, why it is not: the probe's own error then is often only
   * "Command timed out". Once it was ready, the probe's error is the one that counts.
   */
  readonly lastError: Error | undefined;
  /**
   * A connection made that never became ready: a Redis still loading its dataset (ioredis's ready
   * check waits that out), or a listener that is not Redis and stays silent. Not "start
   * redis-server": one is running there. Its ready check timing out (ioredis's commandTimeout) is the
   * usual error then; a socket error (a reset, a close) is something else.
   */
  neverReady(): boolean;
  /** Whether a connection was made at all (a reset after it points at TLS). */
  readonly connected: boolean;
  stop(): void;
}

export function watchAttempt(client: RedisClient): Attempt {
  let lastError: Error | undefined;
  let connected = false;
  let everReady = false;
  const quiet = (error: Error) => {
    lastError = error;
  };
  const ready = () => {
    lastError = undefined;
    everReady = true;
  };
  const connect = () => {
    connected = true;
  };
  client.on('error', quiet);
  client.once('ready', ready);
  client.once('connect', connect);
  return {
    get lastError() {
      return lastError;
    },
    get connected() {
      return connected;
    },
    neverReady: () =>
      !isCluster(client) &&
      connected &&
      !everReady &&
      (!lastError || /Command timed out/i.test(lastError.message)),
    stop: () => {
      client.off('error', quiet);
      client.off('ready', ready);
      client.off('connect', connect);
    },
  };
}

/** Resolves when the client is ready, or after `timeoutMs`, whichever comes first. */
export function readyWithin(client: RedisClient, timeoutMs: number): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      client.off('ready', done);
      client.off('end', done);
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    client.once('ready', done);
    client.once('end', done);
  });
}

/**
 * The error connectRedis rejects with, in the user's terms: what answered (a replica, a server that
 * refused the database, one never ready, another service, a TLS mismatch) and what to change.
 * `neverReady`: {@link Attempt.neverReady}, read before the client was closed.
 */
export function attemptFailure(
  client: RedisClient,
  target: RedisTarget,
  attempt: Attempt,
  neverReady: boolean,
  health: RedisHealth,
  cause: unknown,
): Error {
  const where = describeTarget(target);
  if (cause instanceof NotMasterError) {
    return new Error(
      `express-redis-kit: Redis at ${where} is ${cause.what}. ` +
        "Point the URL at the master (a managed Redis's primary endpoint), or connect through sentinel.",
    );
  }
  const refused = refusalOf(client);
  if (refused) return new Error(`express-redis-kit: Redis at ${where}: ${refused.why}. ${refused.fix}`);
  const why = maskUrl(withoutCommandArgs(attempt.lastError)?.message ?? health.error ?? 'no answer');
  const shown = why.replace(/\.$/, '');
  if (neverReady) {
    return new Error(
      `express-redis-kit: Redis at ${where} accepted the connection but never became ready: ${shown}. A Redis still loading its dataset is ready once it has loaded (start again then); otherwise check that a Redis server listens there.`,
    );
  }
  return new Error(
    `express-redis-kit: cannot reach Redis at ${where}: ${shown}. ${hintFor(why, target, attempt)}`,
  );
}

function hintFor(why: string, target: RedisTarget, attempt: Attempt): string {
  if (/^(WRONGPASS|NOAUTH)\b/.test(why)) return 'Check the user and password in the URL or options.';
  if (/Unknown RESP type|Protocol error/i.test(why)) {
    return 'What answered there does not speak the Redis protocol: check the host and port (another service?).';
  }
  if (/TLS|SSL|certificate/i.test(why) || (attempt.connected && /ECONNRESET/.test(why))) {
    return 'Check the scheme against the server (rediss:// for TLS, redis:// without) and the TLS options (tls: { ca, servername }).';
  }
  if (target.kind === 'sentinel') {
    return 'Check that the sentinels answer at the addresses given, the master name, and sentinelPassword.';
  }
  return 'Start redis-server, or set REDIS_URL to a reachable server.';
}
