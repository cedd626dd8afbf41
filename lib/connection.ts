import Redis, { Cluster, type ClusterOptions, type RedisOptions } from 'ioredis';
import { isCluster, type RedisClient } from './client';
import { closeRedis } from './close-redis';
import { attemptFailure, describeTarget, readyWithin, watchAttempt } from './connect-attempt';
import { closeOnRefusedDatabase, reportOutages } from './connection-events';
import { DEFAULT_REDIS_URL, type RedisTarget, validateRedisOptions } from './connection-options';
import { probeRedis } from './health';
import { neverThrows } from './logger';
import { isUrl, type NodeAddress, toAddress, urlAddress, urlAuth } from './node-address';
import { reconnectOnReadonly } from './replica';

/** A host/port pair, or a `host:port` string. */
export type { NodeAddress };
/** Where the kit's default connection goes when nothing is configured. */
// Closing lives in close-redis.ts; imported from here as before.
export { closeRedis, DEFAULT_REDIS_URL };

/** Options of {@link createRedis}; any other ioredis option passes through unchanged. */
export interface CreateRedisOptions extends Omit<RedisOptions, 'sentinels' | 'name'> {
  /**
   * `redis://[user:pass@]host:port[/db]` or `rediss://…` for TLS.
   * Default: `process.env.REDIS_URL`, else `redis://127.0.0.1:6379`.
   */
  url?: string | undefined;
  /** Connect to a Redis Cluster. Also taken from `REDIS_CLUSTER_NODES=host:port,host:port`. */
  cluster?: { nodes: NodeAddress[]; options?: ClusterOptions } | undefined;
  /** Connect through Redis Sentinel to the master called `name`. */
  sentinel?: { sentinels: NodeAddress[]; name: string; sentinelPassword?: string | undefined } | undefined;
  /** Prepended to every key the kit (and the app, through this client) reads or writes. */
  keyPrefix?: string | undefined;
  /** Per-command time limit in ms. Default 500. */
  commandTimeout?: number | undefined;
  /**
   * Sends the commands of one tick in one write. Default `true`, but `false` on a Cluster: there
   * ioredis 6 does not follow a `MOVED`/`ASK` redirect in a batch that also holds a write, so keys
   * of a resharded or migrating slot would fail.
   */
  enableAutoPipelining?: boolean | undefined;
  /** Longest wait between reconnect attempts, in ms. Default 2000. */
  maxReconnectDelay?: number | undefined;
  /**
   * With `true`, `createRedis` returns a Promise that pings once and rejects with an error naming the
   * (masked) URL when Redis is unreachable. Same as {@link connectRedis}.
   */
  failFast?: boolean | undefined;
  /**
   * Where the client's connection errors go: one line when Redis becomes unreachable and one when it
   * is back, instead of ioredis's "Unhandled error event" stack trace on every reconnect attempt.
   * Default: `console.warn`. `false`: nothing (attach your own `error` listener).
   */
  logger?: { warn(message: string): void } | false | undefined;
}

const DEFAULTS = {
  commandTimeout: 500,
  maxReconnectDelay: 2000,
  connectTimeout: 2000,
  // One retry per command across a reconnect, then the command fails: bounded work per request.
  maxRetriesPerRequest: 1,
  // How long a socket being closed hard may take to close before it is destroyed; ioredis's timer
  // for it keeps the process alive, also when the socket was already gone (closed while reconnecting).
  disconnectTimeout: 500,
  // How long one sentinel may take to name the master before the next one is asked.
  sentinelCommandTimeout: 1000,
} as const;

/**
 * Capped exponential reconnect backoff with jitter ("equal jitter"): never gives up, never waits
 * longer than `max`, and spreads a fleet's reconnects so a returning Redis is not stampeded.
 */
export function reconnectDelay(times: number, max: number = DEFAULTS.maxReconnectDelay): number {
  const ceiling = Math.min(max, 50 * 2 ** Math.min(times, 16));
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

/** Creates an ioredis client tuned for the request path. See the README for every option. */
export function createRedis(options: CreateRedisOptions & { failFast: true }): Promise<RedisClient>;
export function createRedis(options?: CreateRedisOptions & { failFast?: false | undefined }): RedisClient;
/** With `failFast` known only at run time (`failFast: process.env.X === '1'`): a client, or a Promise of one. */
export function createRedis(
  options: CreateRedisOptions & { failFast: boolean },
): RedisClient | Promise<RedisClient>;
/**
 * Options typed as a whole (`const o: CreateRedisOptions = …`): a client, as before the overload above
 * existed; with `failFast: true` in such an object it is a Promise, so pass `failFast` inline, or
 * use `connectRedis()`.
 */
export function createRedis(options: CreateRedisOptions): RedisClient;
export function createRedis(options: CreateRedisOptions = {}): RedisClient | Promise<RedisClient> {
  // Checked before failFast picks the return type ('false' from an env var must not turn it on), so
  // a bad option throws here either way instead of sometimes rejecting a Promise.
  const target = validateRedisOptions(options);
  if (options.failFast) return connectRedis(options);
  return buildClient(options, target);
}

/** Creates a client and pings it once; rejects with a clear error (password masked) when unreachable. */
export async function connectRedis(options: CreateRedisOptions = {}): Promise<RedisClient> {
  // Quiet until it has answered once: the rejection below says it better.
  const target = validateRedisOptions(options);
  const client = buildClient({ ...options, failFast: false }, target, true);
  // With logger: false nobody listens yet (the caller gets the client only on success), and ioredis
  // would print a stack trace for each failed attempt beside the rejection that already says it.
  const attempt = watchAttempt(client);
  const budgetMs = Math.max(options.connectTimeout ?? 0, 3000);
  const started = performance.now();
  // The probe's command would otherwise wait in the offline queue, bounded by the client's 500 ms
  // commandTimeout, not by this budget: a Sentinel client may need longer to connect (a sentinel that
  // hangs costs sentinelCommandTimeout before the next one is asked).
  // A lazyConnect client connects at its first command: the probe's, after this wait.
  if (client.status === 'wait') client.connect().catch(() => {});
  await readyWithin(client, budgetMs);
  const { health, cause } = await probeRedis(client, {
    timeoutMs: Math.max(budgetMs - (performance.now() - started), 500),
  });
  if (!health.ok) {
    const neverReady = attempt.neverReady();
    await closeRedis(client, { timeoutMs: 200 });
    throw attemptFailure(client, target, attempt, neverReady, health, cause);
  }
  attempt.stop();
  return client;
}

function buildClient(options: CreateRedisOptions, target: RedisTarget, quietUntilReady = false): RedisClient {
  const client = newClient(options, target);
  const { logger = { warn: (message: string) => console.warn(message) } } = options;
  const warn = logger === false ? undefined : neverThrows(logger);
  closeOnRefusedDatabase(client, describeTarget(target), warn);
  if (warn) reportOutages(client, describeTarget(target), warn, quietUntilReady);
  return client;
}

function newClient(options: CreateRedisOptions, target: RedisTarget): RedisClient {
  const {
    url: _url,
    cluster,
    sentinel: _sentinel,
    failFast: _failFast,
    logger: _logger,
    maxReconnectDelay = DEFAULTS.maxReconnectDelay,
    ...ioredisOptions
  } = options;
  const tuned: RedisOptions = {
    commandTimeout: DEFAULTS.commandTimeout,
    connectTimeout: DEFAULTS.connectTimeout,
    maxRetriesPerRequest: DEFAULTS.maxRetriesPerRequest,
    disconnectTimeout: DEFAULTS.disconnectTimeout,
    enableAutoPipelining: true,
    retryStrategy: (times: number) => reconnectDelay(times, maxReconnectDelay),
    // After a failover behind a stable address (a DNS name or VIP), the open socket is still on the
    // old master, now a replica, which refuses every write: connect again, to the new master.
    // Without it the client stays on the replica until restarted. The refused command is not sent
    // again (its caller may have given up by then), and at most once a second: while the address
    // still leads to the replica, each reconnect would meet the same refusal.
    reconnectOnError: reconnectOnReadonly,
    // An option given as undefined (forwarded from a config object) keeps its default, as when left
    // out: spread as it is, commandTimeout: undefined would turn the request-path timeout off.
    ...definedOnly(ioredisOptions),
  };
  if (target.kind === 'cluster') {
    // Auto-pipelining stays off on a Cluster unless asked for: ioredis 6 does not follow a MOVED or
    // ASK redirect in an auto-pipelined batch that also holds a successful write (every script is
    // one), so keys of a resharded or migrating slot would fail until the client restarts.
    // A Cluster follows failovers through its slot map (MOVED), not by reconnecting one node.
    const {
      keyPrefix,
      enableAutoPipelining: _standaloneDefault,
      reconnectOnError: _standaloneReconnect,
      ...redisOptions
    } = tuned;
    const enableAutoPipelining = options.enableAutoPipelining ?? false;
    // A URL (`redis://:password@host:port`, as providers hand them out) is split: its address is
    // the startup node, its user, password and TLS go to every node (ioredis would use them for that
    // startup node only, and the masters it learns from CLUSTER SLOTS would answer NOAUTH).
    // What the app set itself (top level or in cluster.options.redisOptions) wins over the URL.
    const own = { ...redisOptions, ...definedOnly(cluster?.options?.redisOptions ?? {}) };
    const auth = Object.fromEntries(
      Object.entries(urlAuth(target.nodes.find(isUrl))).filter(
        ([name]) => own[name as keyof RedisOptions] === undefined,
      ),
    );
    return new Cluster(
      target.nodes.map((node) => (isUrl(node) ? urlAddress(node) : toAddress(node))),
      {
        enableAutoPipelining,
        keyPrefix,
        clusterRetryStrategy: (times: number) => reconnectDelay(times, maxReconnectDelay),
        slotsRefreshTimeout: 2000,
        // Top-level, as for a single server ("anything else passes to ioredis"): given only to the
        // nodes, a Cluster (whose nodes connect lazily anyway) would connect at once.
        ...(redisOptions.lazyConnect === undefined ? {} : { lazyConnect: redisOptions.lazyConnect }),
        ...cluster?.options,
        // Merged, not replaced: a user's redisOptions (a password, tls) must not drop the timeouts.
        redisOptions: { ...redisOptions, ...auth, ...definedOnly(cluster?.options?.redisOptions ?? {}) },
      },
    );
  }
  if (target.kind === 'sentinel') {
    return new Redis({
      // Moves the connection at Sentinel's +switch-master. Without it, it stays on the old master
      // until Sentinel reconfigures that one (about 10 s later), and every write there is lost.
      failoverDetector: true,
      // ioredis waits for a sentinel's answer for ever by default: one that hangs (a frozen host,
      // first in the list) would keep the client from ever asking the healthy ones.
      sentinelCommandTimeout: DEFAULTS.sentinelCommandTimeout,
      ...tuned,
      sentinels: target.sentinel.sentinels.map(toAddress),
      name: target.sentinel.name,
      // The option's own, else ioredis's top-level one (README: other options pass through).
      sentinelPassword: target.sentinel.sentinelPassword ?? tuned.sentinelPassword,
    });
  }
  // host/port/path go to ioredis as options: a URL argument would win over them.
  // ioredis turns TLS on for a lower-case "rediss://" only: "REDISS://" would send the password in
  // clear text.
  return target.from === 'address'
    ? new Redis(tuned)
    : new Redis(
        target.url.replace(/^rediss?:/i, (scheme) => scheme.toLowerCase()),
        tuned,
      );
}

function definedOnly<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as Partial<T>;
}
