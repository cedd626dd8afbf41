import Redis, { Cluster, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { RedisClient } from './client';
import { isCluster } from './client';
import { MAX_TIMER_MS } from './duration';
import { booleanOption, checkKnownOptions, numberOptionError, optionError, shown } from './errors';

/** Where the kit's default connection goes when nothing is configured. */
export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

/** A host/port pair, or a `host:port` string. */
export type NodeAddress = string | { host: string; port: number };

/** Options of {@link createRedis}; any other ioredis option passes through unchanged. */
export interface CreateRedisOptions extends Omit<RedisOptions, 'sentinels' | 'name'> {
  /**
   * `redis://[user:pass@]host:port[/db]` or `rediss://…` for TLS.
   * Default: `process.env.REDIS_URL`, else `redis://127.0.0.1:6379`.
   */
  url?: string;
  /** Connect to a Redis Cluster. Also taken from `REDIS_CLUSTER_NODES=host:port,host:port`. */
  cluster?: { nodes: NodeAddress[]; options?: ClusterOptions };
  /** Connect through Redis Sentinel to the master called `name`. */
  sentinel?: { sentinels: NodeAddress[]; name: string; sentinelPassword?: string };
  /** Prepended to every key the kit (and the app, through this client) reads or writes. */
  keyPrefix?: string;
  /** Per-command time limit in ms. Default 500. */
  commandTimeout?: number;
  /** Longest wait between reconnect attempts, in ms. Default 2000. */
  maxReconnectDelay?: number;
  /**
   * With `true`, `createRedis` returns a Promise that pings once and rejects with an error naming the
   * (masked) URL when Redis is unreachable. Same as {@link connectRedis}.
   */
  failFast?: boolean;
}

const DEFAULTS = {
  commandTimeout: 500,
  maxReconnectDelay: 2000,
  connectTimeout: 2000,
  // One retry per command across a reconnect, then the command fails: bounded work per request.
  maxRetriesPerRequest: 1,
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
export function createRedis(options?: CreateRedisOptions): RedisClient;
export function createRedis(options: CreateRedisOptions = {}): RedisClient | Promise<RedisClient> {
  // Checked before failFast picks the return type ('false' from an env var must not turn it on), so
  // a bad option throws here either way instead of sometimes rejecting a Promise.
  validate(options);
  if (options.failFast) return connectRedis(options);
  return buildClient(options);
}

/** Creates a client and pings it once; rejects with a clear error (password masked) when unreachable. */
export async function connectRedis(options: CreateRedisOptions = {}): Promise<RedisClient> {
  const client = buildClient({ ...options, failFast: false });
  const health = await pingRedis(client, { timeoutMs: Math.max(options.connectTimeout ?? 0, 3000) });
  if (!health.ok) {
    await closeRedis(client, { timeoutMs: 200 });
    throw new Error(
      `express-redis-kit: cannot reach Redis at ${describeTarget(options)}: ${health.error ?? 'no answer'}. ` +
        'Start redis-server, or set REDIS_URL to a reachable server.',
    );
  }
  return client;
}

function buildClient(options: CreateRedisOptions): RedisClient {
  validate(options);
  const {
    url,
    cluster,
    sentinel,
    failFast: _failFast,
    maxReconnectDelay = DEFAULTS.maxReconnectDelay,
    ...ioredisOptions
  } = options;
  const tuned: RedisOptions = {
    commandTimeout: DEFAULTS.commandTimeout,
    connectTimeout: DEFAULTS.connectTimeout,
    maxRetriesPerRequest: DEFAULTS.maxRetriesPerRequest,
    enableAutoPipelining: true,
    retryStrategy: (times: number) => reconnectDelay(times, maxReconnectDelay),
    ...ioredisOptions,
  };
  const clusterNodes = cluster?.nodes ?? (url || sentinel ? undefined : envClusterNodes());
  if (clusterNodes) {
    const { keyPrefix, enableAutoPipelining, ...redisOptions } = tuned;
    return new Cluster(clusterNodes.map(toAddress), {
      enableAutoPipelining,
      keyPrefix,
      clusterRetryStrategy: (times: number) => reconnectDelay(times, maxReconnectDelay),
      slotsRefreshTimeout: 2000,
      redisOptions,
      ...cluster?.options,
    });
  }
  if (sentinel) {
    return new Redis({
      ...tuned,
      sentinels: sentinel.sentinels.map(toAddress),
      name: sentinel.name,
      sentinelPassword: sentinel.sentinelPassword,
    });
  }
  return new Redis(url ?? (process.env.REDIS_URL || DEFAULT_REDIS_URL), tuned);
}

const CLUSTER_KNOWN = new Set(['nodes', 'options']);
const SENTINEL_KNOWN = new Set(['sentinels', 'name', 'sentinelPassword']);
const SENTINEL_RENAMED: Record<string, string> = {
  password:
    'use "sentinelPassword" for the sentinels\' password; the master\'s goes in the top-level "password"',
  masterName: 'use "name"',
  nodes: 'use "sentinels"',
};

/**
 * Checks the options createRedis itself reads or defaults (a string from an env var is a TypeError,
 * an out-of-range number a RangeError); other ioredis options go to ioredis unchanged.
 */
function validate(options: CreateRedisOptions): void {
  if (!options || typeof options !== 'object') {
    throw optionError(
      'options',
      `must be an object; got ${shown(options)}`,
      "e.g. createRedis({ url: 'redis://…' })",
    );
  }
  if (options.url !== undefined) {
    if (typeof options.url !== 'string') {
      throw optionError(
        'url',
        `must be a string; got ${shown(options.url)}`,
        "e.g. 'redis://127.0.0.1:6379'.",
      );
    }
    if (!/^rediss?:\/\//.test(options.url)) {
      throw optionError(
        'url',
        `must start with redis:// or rediss:// (TLS); got ${shown(maskUrl(options.url))}`,
      );
    }
  }
  const sources = (['url', 'cluster', 'sentinel'] as const).filter((o) => options[o] !== undefined);
  if (sources.length > 1) {
    // One would silently win over the other: the app would talk to another Redis than it names.
    throw optionError(sources.join('" and "'), 'cannot be combined', 'Pass one of url, cluster or sentinel.');
  }
  checkMs(options.commandTimeout, 'commandTimeout');
  checkMs(options.connectTimeout, 'connectTimeout');
  checkMs(options.maxReconnectDelay, 'maxReconnectDelay');
  const retries = options.maxRetriesPerRequest;
  if (retries !== undefined && retries !== null && !(Number.isSafeInteger(retries) && retries >= 0)) {
    throw numberOptionError(
      'maxRetriesPerRequest',
      retries,
      `must be a whole number >= 0, or null to retry until the command succeeds; got ${shown(retries)}`,
    );
  }
  booleanOption(options.enableAutoPipelining, 'enableAutoPipelining', true);
  booleanOption(options.failFast, 'failFast', false);
  if (options.keyPrefix !== undefined && typeof options.keyPrefix !== 'string') {
    throw optionError('keyPrefix', `must be a string; got ${shown(options.keyPrefix)}`);
  }
  if (options.cluster !== undefined) {
    if (typeof options.cluster !== 'object' || options.cluster === null) {
      throw optionError('cluster', `must be an object { nodes, options? }; got ${shown(options.cluster)}`);
    }
    checkKnownOptions(options.cluster, CLUSTER_KNOWN, 'cluster', {}, 'cluster.');
    if (!Array.isArray(options.cluster.nodes) || options.cluster.nodes.length === 0) {
      throw optionError('cluster.nodes', 'must list at least one "host:port"');
    }
  }
  if (options.sentinel !== undefined) {
    if (typeof options.sentinel !== 'object' || options.sentinel === null) {
      throw optionError(
        'sentinel',
        `must be an object { sentinels, name, sentinelPassword? }; got ${shown(options.sentinel)}`,
      );
    }
    checkKnownOptions(options.sentinel, SENTINEL_KNOWN, 'sentinel', SENTINEL_RENAMED, 'sentinel.');
    if (!options.sentinel.name || !options.sentinel.sentinels?.length) {
      throw optionError('sentinel', 'needs "name" (the master name) and at least one entry in "sentinels"');
    }
  }
}

/** A time in ms that ends up in a Node timer: positive, finite, at most the longest timer. */
function checkMs(value: unknown, option: string): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !(value > 0 && value <= MAX_TIMER_MS)) {
    throw numberOptionError(
      option,
      value,
      `must be a positive number of ms, at most ${MAX_TIMER_MS}; got ${shown(value)}`,
    );
  }
}

function envClusterNodes(): NodeAddress[] | undefined {
  const raw = process.env.REDIS_CLUSTER_NODES?.trim();
  if (!raw) return undefined;
  return raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function toAddress(node: NodeAddress): { host: string; port: number } {
  if (typeof node !== 'string') return node;
  const at = node.lastIndexOf(':');
  const port = Number(node.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port)) {
    throw new TypeError(`express-redis-kit: node address "${node}" must look like host:port.`);
  }
  return { host: node.slice(0, at).replace(/^\[|\]$/g, ''), port };
}

/** Hides the password of a Redis URL, for logs and errors. */
export function maskUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '****';
    return parsed.toString();
  } catch {
    return url.replace(/\/\/([^@/]*)@/, '//****@');
  }
}

function describeTarget(options: CreateRedisOptions): string {
  if (options.cluster) return `cluster ${options.cluster.nodes.map((n) => JSON.stringify(n)).join(', ')}`;
  if (options.sentinel) return `sentinel master "${options.sentinel.name}"`;
  if (!options.url && envClusterNodes()) return `cluster ${process.env.REDIS_CLUSTER_NODES}`;
  return maskUrl(options.url ?? (process.env.REDIS_URL || DEFAULT_REDIS_URL));
}

/** Result of {@link pingRedis}. */
export interface RedisHealth {
  ok: boolean;
  latencyMs: number;
  mode: 'standalone' | 'cluster' | 'sentinel';
  error?: string;
}

/** How the client is connected. */
export function redisMode(redis: RedisClient): RedisHealth['mode'] {
  if (isCluster(redis)) return 'cluster';
  return (redis as Redis).options.sentinels?.length ? 'sentinel' : 'standalone';
}

/** Pings Redis for health checks. Never throws; never waits longer than `timeoutMs` (default 1000). */
export async function pingRedis(
  redis: RedisClient,
  options: { timeoutMs?: number } = {},
): Promise<RedisHealth> {
  const timeoutMs = options.timeoutMs ?? 1000;
  const mode = redisMode(redis);
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    });
    const pong = redis.ping();
    pong.catch(() => {});
    await Promise.race([pong, timeout]);
    return { ok: true, latencyMs: round(performance.now() - started), mode };
  } catch (error) {
    return {
      ok: false,
      latencyMs: round(performance.now() - started),
      mode,
      error: (error as Error).message,
    };
  } finally {
    clearTimeout(timer);
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

const subscribers = new WeakMap<object, SharedSubscriber>();

/**
 * Closes a client (and the kit's pub/sub connection made from it): QUIT, then a hard disconnect if
 * Redis has not answered within `timeoutMs` (default 1000). Never throws.
 */
export async function closeRedis(redis: RedisClient, options: { timeoutMs?: number } = {}): Promise<void> {
  const timeoutMs = options.timeoutMs ?? 1000;
  const subscriber = subscribers.get(redis);
  subscribers.delete(redis);
  await Promise.all([
    subscriber ? closeOne(subscriber.connection, timeoutMs) : undefined,
    closeOne(redis, timeoutMs),
  ]);
}

async function closeOne(redis: RedisClient, timeoutMs: number): Promise<void> {
  if (redis.status === 'end') return;
  let hardTimer: NodeJS.Timeout | undefined;
  let lastTimer: NodeJS.Timeout | undefined;
  const ended = new Promise<void>((resolve) => {
    redis.once('end', () => resolve());
    // Whatever happens, never make shutdown wait more than twice the budget.
    lastTimer = setTimeout(resolve, timeoutMs * 2);
  });
  if (redis.status === 'ready') {
    // QUIT lets in-flight replies arrive; if Redis does not answer in time, drop the socket.
    redis.quit().catch(() => redis.disconnect());
    hardTimer = setTimeout(() => redis.disconnect(), timeoutMs);
  } else {
    // QUIT would sit in the offline queue until a reconnect; nothing to flush, so drop the socket.
    redis.disconnect();
  }
  await ended;
  clearTimeout(hardTimer);
  clearTimeout(lastTimer);
}

type MessageHandler = (message: string, channel: string) => void;

interface SharedSubscriber {
  connection: RedisClient;
  handlers: Map<string, Set<MessageHandler>>;
  reconnectHooks: Set<() => void>;
}

/** Options of {@link subscribe}. */
export interface SubscribeOptions {
  /**
   * Called when the subscriber connection comes back after a drop: messages published meanwhile
   * were lost (pub/sub does not queue), so state kept in step by them must start over.
   */
  onReconnect?: () => void;
}

/**
 * Subscribes to a pub/sub channel over one connection per client, shared by everything in the kit
 * and closed by {@link closeRedis}. Returns a function that unsubscribes this handler.
 */
export async function subscribe(
  redis: RedisClient,
  channel: string,
  handler: MessageHandler,
  options: SubscribeOptions = {},
): Promise<() => Promise<void>> {
  let shared = subscribers.get(redis);
  if (!shared) {
    // No command timeout: a subscriber connection waits for messages by design.
    const connection = isCluster(redis)
      ? redis.duplicate()
      : (redis as Redis).duplicate({ commandTimeout: undefined });
    const handlers = new Map<string, Set<MessageHandler>>();
    connection.on('message', (ch: string, message: string) => {
      for (const h of handlers.get(ch) ?? []) {
        try {
          h(message, ch);
        } catch {
          // One bad handler must not starve the others.
        }
      }
    });
    connection.on('error', () => {
      // ioredis reconnects and resubscribes by itself; the error is already visible on the main client.
    });
    const reconnectHooks = new Set<() => void>();
    let connectedBefore = false;
    connection.on('ready', () => {
      if (connectedBefore) for (const hook of reconnectHooks) hook();
      connectedBefore = true;
    });
    const created: SharedSubscriber = { connection, handlers, reconnectHooks };
    shared = created;
    subscribers.set(redis, created);
    // If the app closes its client itself, the subscriber must not keep the process alive.
    redis.once('end', () => {
      if (subscribers.get(redis) !== created) return;
      subscribers.delete(redis);
      connection.disconnect();
    });
  }
  const { connection, handlers, reconnectHooks } = shared;
  let set = handlers.get(channel);
  if (!set) {
    set = new Set();
    handlers.set(channel, set);
    try {
      await connection.subscribe(channel);
    } catch (error) {
      // Leave no empty entry behind, or later calls would skip SUBSCRIBE and hear nothing.
      if (handlers.get(channel)?.size === 0) handlers.delete(channel);
      throw error;
    }
  }
  set.add(handler);
  const hook = options.onReconnect;
  if (hook) reconnectHooks.add(hook);
  return async () => {
    if (hook) reconnectHooks.delete(hook);
    const current = handlers.get(channel);
    if (!current) return;
    current.delete(handler);
    if (current.size === 0) {
      handlers.delete(channel);
      if (connection.status === 'ready') await connection.unsubscribe(channel).catch(() => {});
    }
  };
}
