import type { CreateRedisOptions, NodeAddress } from './connection';
import { MAX_TIMER_MS } from './duration';
import { booleanOption, checkKnownOptions, numberOptionError, optionError, shown } from './errors';
import { checkPrefix } from './keys';
import { hasWarn } from './logger';
import { hidesUserInfo, maskUrl } from './mask-url';

// createRedis()'s construction-time checks, kept apart from building the client (connection.ts).

const CLUSTER_KNOWN = new Set(['nodes', 'options']);
const SENTINEL_KNOWN = new Set(['sentinels', 'name', 'sentinelPassword']);
const SENTINEL_RENAMED: Record<string, string> = {
  password:
    'use "sentinelPassword" for the sentinels\' password; the master\'s goes in the top-level "password"',
  masterName: 'use "name"',
  nodes: 'use "sentinels"',
};

/** The Redis a createRedis() call connects to, and where that choice came from. */
export type RedisTarget =
  | { kind: 'url'; url: string; from: 'url' | 'REDIS_URL' | 'default' }
  /** `host`, `port` or `path` given as ioredis options: `url` is only how logs name it. */
  | { kind: 'url'; url: string; from: 'address' }
  | { kind: 'cluster'; nodes: NodeAddress[]; from: 'cluster' | 'REDIS_CLUSTER_NODES' }
  | { kind: 'sentinel'; sentinel: NonNullable<CreateRedisOptions['sentinel']> };

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

/**
 * The one rule for where createRedis() connects: `url`, `cluster` or `sentinel` as given (only one
 * may be), else `REDIS_CLUSTER_NODES`, else `REDIS_URL`, else the local default.
 */
export function resolveTarget(options: CreateRedisOptions): RedisTarget {
  if (options.url !== undefined) return { kind: 'url', url: options.url, from: 'url' };
  if (options.cluster) return { kind: 'cluster', nodes: options.cluster.nodes, from: 'cluster' };
  if (options.sentinel) return { kind: 'sentinel', sentinel: options.sentinel };
  // ioredis lets a URL argument win over host/port: passing REDIS_URL or the default along with them
  // would connect somewhere other than the options say.
  if (options.host !== undefined || options.port !== undefined || options.path !== undefined) {
    const url =
      options.path !== undefined
        ? `unix:${options.path}`
        : `redis://${formatHost(options.host ?? '127.0.0.1')}:${options.port ?? 6379}`;
    return { kind: 'url', url, from: 'address' };
  }
  const nodes = envClusterNodes();
  if (nodes) return { kind: 'cluster', nodes, from: 'REDIS_CLUSTER_NODES' };
  const env = process.env.REDIS_URL;
  return env
    ? { kind: 'url', url: env, from: 'REDIS_URL' }
    : { kind: 'url', url: DEFAULT_REDIS_URL, from: 'default' };
}

function formatHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

function envClusterNodes(): NodeAddress[] | undefined {
  const raw = process.env.REDIS_CLUSTER_NODES?.trim();
  if (!raw) return undefined;
  return raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/**
 * Checks the options createRedis itself reads or defaults (a string from an env var is a TypeError,
 * an out-of-range number a RangeError); other ioredis options go to ioredis unchanged. → where the
 * client connects.
 */
export function validateRedisOptions(options: CreateRedisOptions): RedisTarget {
  if (!options || typeof options !== 'object') {
    throw optionError(
      'options',
      `must be an object; got ${shown(options)}`,
      "e.g. createRedis({ url: 'redis://…' })",
    );
  }
  const target = resolveTarget(options);
  if (options.url !== undefined) checkUrl(options.url, 'url');
  else if (target.kind === 'url' && target.from === 'REDIS_URL') checkEnvUrl(target.url);
  const sources = (['url', 'cluster', 'sentinel'] as const).filter((o) => options[o] !== undefined);
  if (sources.length > 1) {
    // One would silently win over the other: the app would talk to another Redis than it names.
    throw optionError(sources.join('" and "'), 'cannot be combined', 'Pass one of url, cluster or sentinel.');
  }
  const address = (['host', 'port', 'path'] as const).filter((o) => options[o] !== undefined);
  if (sources.length > 0 && address.length > 0) {
    // The url (or the cluster's nodes, the sentinel's master) would win, silently.
    throw optionError(
      `${sources[0]}" and "${address[0]}`,
      'cannot be combined',
      `Put the address in "${sources[0]}" only, or pass host/port/path without "${sources[0]}".`,
    );
  }
  checkMs(options.commandTimeout, 'commandTimeout');
  checkMs(options.connectTimeout, 'connectTimeout');
  checkMs(options.maxReconnectDelay, 'maxReconnectDelay');
  // 0 is meaningful to ioredis: destroy the socket at once.
  checkMs(options.disconnectTimeout, 'disconnectTimeout', true);
  const retries = options.maxRetriesPerRequest;
  if (retries !== undefined && retries !== null && !(Number.isSafeInteger(retries) && retries >= 0)) {
    throw numberOptionError(
      'maxRetriesPerRequest',
      retries,
      `must be a whole number >= 0, or null to retry until the command succeeds; got ${shown(retries)}`,
    );
  }
  booleanOption(options.enableAutoPipelining, 'enableAutoPipelining', true);
  const nestedStringNumbers = (
    options.cluster?.options as { redisOptions?: { stringNumbers?: unknown } } | undefined
  )?.redisOptions?.stringNumbers;
  for (const [name, value] of [
    ['stringNumbers', (options as { stringNumbers?: unknown }).stringNumbers],
    ['cluster.options.redisOptions.stringNumbers', nestedStringNumbers],
  ] as const) {
    // ioredis reads any true-ish value as on ('false' from an environment variable too).
    if (value) {
      throw optionError(
        name,
        'cannot be on: the kit decides on the integer replies of its scripts, which it would turn into strings',
        'Leave it out; make a separate client for code that needs it.',
      );
    }
  }
  if (target.kind === 'url' && urlTurnsOnStringNumbers(target.url)) {
    throw optionError(
      target.from === 'REDIS_URL' ? 'REDIS_URL' : 'url',
      'turns on stringNumbers, which the kit cannot work with: it decides on the integer replies of its scripts',
      'Remove stringNumbers from the URL.',
    );
  }
  booleanOption(options.failFast, 'failFast', false);
  const logger = options.logger;
  if (logger !== undefined && logger !== false && !hasWarn(logger)) {
    throw optionError(
      'logger',
      `must be an object with a warn(message) method, or false; got ${shown(logger)}`,
    );
  }
  if (options.keyPrefix !== undefined && typeof options.keyPrefix !== 'string') {
    throw optionError('keyPrefix', `must be a string; got ${shown(options.keyPrefix)}`);
  }
  // On a Cluster, braces in the prefix would be every key's hash tag: every key in one slot.
  // Elsewhere they are harmless (and apps written for a Cluster later may use them on purpose).
  if (options.keyPrefix !== undefined && target.kind === 'cluster')
    checkPrefix(options.keyPrefix, 'keyPrefix');
  if (options.cluster !== undefined) {
    if (typeof options.cluster !== 'object' || options.cluster === null) {
      throw optionError('cluster', `must be an object { nodes, options? }; got ${shown(options.cluster)}`);
    }
    checkKnownOptions(options.cluster, CLUSTER_KNOWN, 'cluster', {}, 'cluster.');
    // It wins over the top-level keyPrefix (spread after it), so it needs the same check.
    const nested = (options.cluster.options as { keyPrefix?: unknown } | undefined)?.keyPrefix;
    if (nested !== undefined) checkPrefix(nested, 'cluster.options.keyPrefix');
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
  return target;
}

/** A time in ms that ends up in a Node timer: positive, finite, at most the longest timer. */
function checkMs(value: unknown, option: string, allowZero = false): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !((allowZero ? value >= 0 : value > 0) && value <= MAX_TIMER_MS)) {
    throw numberOptionError(
      option,
      value,
      `must be a ${allowZero ? 'number >= 0' : 'positive number'} of ms, at most ${MAX_TIMER_MS}; got ${shown(value)}`,
    );
  }
}

/** A Redis URL ioredis can read, or an error naming `name` (the option, or the env variable). */
function checkUrl(url: unknown, name: string): void {
  if (typeof url !== 'string') {
    throw optionError(name, `must be a string; got ${shown(url)}`, "e.g. 'redis://127.0.0.1:6379'.");
  }
  if (!/^rediss?:\/\//i.test(url)) {
    throw optionError(name, `must start with redis:// or rediss:// (TLS); got ${shown(maskUrl(url))}`);
  }
  checkParses(url, name);
}

/**
 * REDIS_URL as ioredis reads it: a port number, a unix socket path, `host:port`, `//host` or a
 * redis(s):// URL. What ioredis would parse must parse (else it throws an error that carries the raw
 * value, password included); another scheme would be taken for a socket path.
 */
function checkEnvUrl(url: string): void {
  if (/^\d+$/.test(url) || (url.startsWith('/') && !url.startsWith('//'))) return;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url) && !/^rediss?:\/\//i.test(url)) {
    throw optionError('REDIS_URL', `must start with redis:// or rediss:// (TLS); got ${shown(maskUrl(url))}`);
  }
  const asIoredisReadsIt = /^rediss?:\/\//i.test(url)
    ? url
    : url.startsWith('//')
      ? `redis:${url}`
      : `redis://${url}`;
  checkParses(asIoredisReadsIt, 'REDIS_URL', url);
}

function checkParses(url: string, name: string, given = url): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // ioredis would throw Node's ERR_INVALID_URL, which names no option and carries the raw URL
    // (password included) in its `input`.
    throw optionError(
      name,
      `is not a valid URL; got ${shown(maskUrl(given))}`,
      'Percent-encode special characters of the user name and password (encodeURIComponent), and check the port (0-65535).',
    );
  }
  try {
    // ioredis decodes them and would throw a bare URIError on a lone "%".
    decodeURIComponent(parsed.username);
    decodeURIComponent(parsed.password);
  } catch {
    throw optionError(
      name,
      `has a user name or password that is not valid percent-encoding; got ${shown(maskUrl(given))}`,
      'Percent-encode special characters of the user name and password (encodeURIComponent), "%" as %25.',
    );
  }
  if (hidesUserInfo(parsed)) {
    throw optionError(
      name,
      `has an "@" after its host, so it would not connect where it seems to; got ${shown(maskUrl(given))}`,
      'Percent-encode "/", "?", "#" and "@" in the user name and password (encodeURIComponent).',
    );
  }
}

/** ioredis copies a URL's query into its options: any value but an empty one turns the flag on. */
function urlTurnsOnStringNumbers(url: string): boolean {
  const at = url.indexOf('?');
  if (at < 0) return false;
  const value = new URLSearchParams(url.slice(at + 1).split('#')[0]).get('stringNumbers');
  return value !== null && value !== '';
}
