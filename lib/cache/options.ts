import type { Request, Response } from 'express';
import { checkClient, type RedisClient } from '../client';
import { type Duration, MAX_TIMER_MS, toMs } from '../duration';
import { checkKnownOptions, numberOptionError, optionError, shown } from '../errors';
import { checkPrefix, DEFAULT_PREFIX } from '../keys';
import { neverThrows } from '../logger';
import { type PerUserRules, resolvePerUserRules } from './per-user';

/** Where the cache reports entries it had to throw away (pino and console both fit). */
export interface CacheLogger {
  warn(details: object, message: string): void;
}

/** The in-process tier. Entries live here for at most their own lifetime (and `ttl` when given). */
export interface L1Options {
  /** Most entries kept. Default 1000. */
  max?: number;
  /** Most bytes of bodies kept. Default 64 MiB. */
  maxSize?: number;
  /** Upper bound of an entry's stay in L1, a safety net should an invalidation message be lost. */
  ttl?: Duration;
}

/** Options of {@link createCache}. */
export interface CreateCacheOptions {
  /** An ioredis `Redis` or `Cluster` (e.g. `createRedis()` or your own `new Redis(url)`). Required. */
  redis: RedisClient;
  /** In-process tier, kept coherent across instances over pub/sub. Default `{ max: 1000 }`; `false` turns it off. */
  l1?: L1Options | false;
  /** Prefix of every key and of the invalidation channel. Default `'erk:'`. */
  prefix?: string;
  /** Longest wait for Redis on the request path; slower means bypass. Default 150 ms. */
  timeout?: Duration;
  /**
   * How long a concurrent miss waits for the instance that fills the entry before it runs the origin
   * itself, should that instance die (the lock expires after this). Default 5 s.
   */
  lockTimeout?: Duration;
  /** Random spread of the fresh lifetime, as a fraction: 0.1 means ±10 %. Default 0.1. */
  jitter?: number;
  /** Name reported in events. */
  name?: string;
  /** Receives warnings about corrupt entries and failed background work. Default: `console.warn`. */
  logger?: CacheLogger;
}

/** A custom (de)serializer for {@link Cache.wrap}. Default: JSON. */
export interface Serializer<T> {
  serialize(value: T): string | Buffer;
  deserialize(raw: Buffer): T;
}

/** Options of one {@link Cache.wrap} call. */
export interface WrapOptions<T> {
  /** Fresh lifetime. Required. */
  ttl: Duration;
  /** Tags for {@link Cache.invalidate}. */
  tags?: string[];
  /** Cache `null`/`undefined` results for this long. Default: never cache them. */
  cacheNullFor?: Duration;
  /** Default: JSON. */
  serializer?: Serializer<T>;
  /** After the fresh lifetime, return the old value for this long while one refresh runs. Default 0. */
  staleWhileRevalidate?: Duration;
  /** When `fn` throws, return an expired value up to this long after it went stale. Default 0. */
  staleIfError?: Duration;
}

/** Options of {@link cacheResponse}. */
export interface CacheResponseOptions {
  /** An ioredis `Redis` or `Cluster`. Required unless `cache` is given. */
  redis?: RedisClient;
  /** A cache made by `createCache()`, to share its L1, bus and settings between middlewares. */
  cache?: import('./wrap').Cache;
  /** Fresh lifetime of a response. Required. */
  ttl: Duration;
  /**
   * The cache key of a request. Default: method + path + sorted query. A custom key is trusted to
   * hold whatever makes responses differ per user, so requests with credentials are cached under it.
   */
  key?: (req: Request) => string;
  /**
   * Per-user scope (e.g. `req => req.session.userId`). With it, requests carrying `Authorization`, a
   * session cookie or a credential header are cached, keyed by the scope; an empty scope means bypass.
   */
  scope?: (req: Request) => string | number | undefined | null;
  /** Tags of a stored response, for `invalidate({ tags })`. */
  tags?: (req: Request, res: Response) => string[];
  /** Request headers that split the key, on top of the response's own `Vary`. */
  vary?: string[];
  /** Serve a stale entry for this long after `ttl` while one background refresh runs. Default 0. */
  staleWhileRevalidate?: Duration;
  /** Serve a stale entry for this long after `ttl` when the origin fails (5xx or throws). Default 0. */
  staleIfError?: Duration;
  /** In-process tier (only when `cache` is not given). Default `{ max: 1000 }`; `false` turns it off. */
  l1?: L1Options | false;
  /** Fraction of random spread of `ttl`. Default 0.1 (±10 %). */
  jitter?: number;
  /** Bodies larger than this pass through uncached, without being buffered. Default 1 MiB. */
  maxBodySize?: number;
  /** Statuses that may be stored. Default `[200, 203, 204, 300, 301, 308]`. */
  statuses?: number[];
  /** Methods served from cache (HEAD always follows GET). Default `['GET']`. */
  methods?: string[];
  /** See {@link CreateCacheOptions.lockTimeout}. Default 5 s. */
  lockTimeout?: Duration;
  /** See {@link CreateCacheOptions.timeout}. Default 150 ms. */
  timeout?: Duration;
  /** Last word on whether a response is stored (after the built-in safety rules). */
  shouldCache?: (req: Request, res: Response) => boolean;
  /** Key prefix (only when `cache` is not given). Default `'erk:'`. */
  prefix?: string;
  /**
   * Cookie names that mark a request as per-user (not answered from the cache without `scope`/`key`).
   * Default: {@link CACHE_DEFAULTS.sessionCookie}, any name containing `sess`, `auth`, `token` or `jwt`
   * (case-insensitive), or a `sid` part (`connect.sid`, `sid`, `app_sid`): `appSession`,
   * `sessionToken`, `XSRF-TOKEN`, `auth_token`… A RegExp or a list of exact names replaces that rule
   * (e.g. `['connect.sid']` to cache requests carrying other cookies); `false`: no cookie counts.
   */
  sessionCookie?: RegExp | string[] | false;
  /**
   * Request headers (by name) that carry a credential or an identity, and so mark a request as
   * per-user like `Authorization` (which always does). Default: {@link CACHE_DEFAULTS.credentialHeader},
   * any name containing `auth`, `token`, `jwt`, `sess`, `api-key`/`apikey`, `principal`, `consumer`,
   * `credential`, `oidc`, `email` or `client-cert`/`client-dn`, or ending in `user`/`username`/`userid` (`-id`,
   * `-email`, `-name`): `X-Api-Key`, `X-Auth-Token`, `X-Forwarded-User`, `X-Consumer-Id`,
   * `X-Ms-Client-Principal`…, but no `Sec-*` header. A RegExp (matched regardless of case) or a list
   * of names replaces that rule; `false`: only `Authorization` counts.
   */
  credentialHeaders?: RegExp | string[] | false;
  /** Name reported in events. */
  name?: string;
  /** See {@link CreateCacheOptions.logger}. */
  logger?: CacheLogger;
}

/** Every default of the cache, in one place. */
export const CACHE_DEFAULTS = {
  l1: { max: 1000, maxSize: 64 * 1024 * 1024 },
  timeoutMs: 150,
  lockTimeoutMs: 5000,
  jitter: 0.1,
  maxBodySize: 1024 * 1024,
  statuses: [200, 203, 204, 300, 301, 308],
  methods: ['GET'],
  // Safe by default: a per-user cookie missed here means one user's response served to another.
  sessionCookie: /sess|auth|token|jwt|(^|[._-])sid([._-]|$)/i,
  // API keys and identities a gateway or proxy adds (oauth2-proxy, Azure Easy Auth, Cloudflare
  // Access, AWS ALB OIDC, Kong/APISIX consumers, mTLS client certificates): same risk.
  credentialHeader:
    /auth|token|jwt|sess|api-?key|principal|consumer|credential|oidc|email|client-(cert|dn)|(^|-)user(name|id)?(-(id|email|name))?$/i,
  /**
   * Never credentials, whatever the rule says: browser-controlled `Sec-*` headers (`Sec-Fetch-User`
   * comes with every navigation), HTTP/2 pseudo-headers, and Vercel's per-deployment OIDC token.
   */
  notCredentialHeader: /^(sec-|:)|^x-vercel-oidc-token$/,
} as const;

const consoleLogger: CacheLogger = {
  warn: (details, message) => console.warn(`express-redis-kit cache: ${message}`, details),
};

export interface ResolvedL1 {
  max: number;
  maxSize: number;
  ttlMs: number | undefined;
}

export interface ResolvedCacheOptions {
  redis: RedisClient;
  l1: ResolvedL1 | false;
  prefix: string;
  timeoutMs: number;
  lockTimeoutMs: number;
  jitter: number;
  name: string | undefined;
  logger: CacheLogger;
}

// Exactly the names of CreateCacheOptions, CacheResponseOptions and L1Options: anything else is a
// typo or an option carried over from another library, never silently ignored.
const CACHE_KNOWN = new Set(['redis', 'l1', 'prefix', 'timeout', 'lockTimeout', 'jitter', 'name', 'logger']);

const CACHE_RENAMED: Record<string, string> = {
  ttl: "the lifetime belongs to each call: cache.wrap(key, fn, { ttl: '10m' })",
  max: 'use "l1: { max }"',
  client: 'pass the ioredis client as "redis"',
  redisClient: 'pass the ioredis client as "redis"',
  store: 'pass the ioredis client as "redis"',
};

const RESPONSE_KNOWN = new Set([
  'redis',
  'cache',
  'ttl',
  'key',
  'scope',
  'tags',
  'vary',
  'staleWhileRevalidate',
  'staleIfError',
  'l1',
  'jitter',
  'maxBodySize',
  'statuses',
  'methods',
  'lockTimeout',
  'timeout',
  'shouldCache',
  'prefix',
  'sessionCookie',
  'credentialHeaders',
  'name',
  'logger',
]);

// apicache and express-cache option names people will bring along.
const RESPONSE_RENAMED: Record<string, string> = {
  defaultDuration: 'use "ttl" (ms or a duration string such as \'5m\')',
  duration: 'use "ttl"',
  expire: 'use "ttl"',
  statusCodes: 'use "statuses" (the statuses that may be stored)',
  appendKey: 'use "key" or "scope"',
  keyGenerator: 'use "key" (or "scope" for per-user entries)',
  redisClient: 'pass the ioredis client as "redis"',
  client: 'pass the ioredis client as "redis"',
  store: 'pass the ioredis client as "redis", or a createCache() instance as "cache"',
  debug: 'watch hits and misses with onKitEvent() (component "cache")',
  stale: 'use "staleWhileRevalidate" and/or "staleIfError"',
  max: 'use "l1: { max }"',
};

const L1_KNOWN = new Set(['max', 'maxSize', 'ttl']);
const L1_RENAMED: Record<string, string> = {
  maxItems: 'use "max"',
  maxEntries: 'use "max"',
  size: 'use "max" (entries) or "maxSize" (bytes)',
  maxBytes: 'use "maxSize"',
};

export function resolveCacheOptions(options: CreateCacheOptions): ResolvedCacheOptions {
  if (!options || typeof options !== 'object')
    throw optionError('options', 'must be an object', 'Pass { redis }.');
  checkKnownOptions(options, CACHE_KNOWN, 'createCache', CACHE_RENAMED);
  return {
    redis: checkClient(options.redis),
    l1: resolveL1(options.l1),
    prefix: checkPrefix(options.prefix ?? DEFAULT_PREFIX),
    timeoutMs: toMs(options.timeout ?? CACHE_DEFAULTS.timeoutMs, 'timeout', { max: MAX_TIMER_MS }),
    lockTimeoutMs: toMs(options.lockTimeout ?? CACHE_DEFAULTS.lockTimeoutMs, 'lockTimeout', {
      min: 10,
      max: MAX_TIMER_MS,
    }),
    jitter: checkJitter(options.jitter),
    name: options.name,
    logger: neverThrows(checkLogger(options.logger)),
  };
}

function resolveL1(l1: L1Options | false | undefined): ResolvedL1 | false {
  if (l1 === false) return false;
  if (l1 !== undefined && (typeof l1 !== 'object' || l1 === null)) {
    throw optionError('l1', `must be an object like { max: 1000 } or false; got ${shown(l1)}`);
  }
  if (l1 !== undefined) checkKnownOptions(l1, L1_KNOWN, 'cache L1', L1_RENAMED, 'l1.');
  const max = l1?.max ?? CACHE_DEFAULTS.l1.max;
  const maxSize = l1?.maxSize ?? CACHE_DEFAULTS.l1.maxSize;
  if (!Number.isInteger(max) || max < 1)
    throw numberOptionError('l1.max', max, `must be a whole number >= 1; got ${shown(max)}`);
  if (!Number.isInteger(maxSize) || maxSize < 1) {
    throw numberOptionError(
      'l1.maxSize',
      maxSize,
      `must be a whole number of bytes >= 1; got ${shown(maxSize)}`,
    );
  }
  return { max, maxSize, ttlMs: l1?.ttl === undefined ? undefined : toMs(l1.ttl, 'l1.ttl') };
}

function checkJitter(jitter: unknown): number {
  if (jitter === undefined) return CACHE_DEFAULTS.jitter;
  if (typeof jitter !== 'number' || !(jitter >= 0 && jitter < 1)) {
    throw numberOptionError(
      'jitter',
      jitter,
      `must be a fraction from 0 to below 1 (0.1 = ±10 %); got ${shown(jitter)}`,
    );
  }
  return jitter;
}

function checkLogger(logger: unknown): CacheLogger {
  if (logger === undefined) return consoleLogger;
  if (!logger || typeof (logger as CacheLogger).warn !== 'function') {
    throw optionError(
      'logger',
      'must have a warn(details, message) method',
      'Pass a pino logger or console-like object.',
    );
  }
  return logger as CacheLogger;
}

export function checkFunction<T>(value: T | undefined, option: string): T | undefined {
  if (value !== undefined && typeof value !== 'function') {
    throw optionError(option, `must be a function; got ${typeof value}`);
  }
  return value;
}

export interface ResolvedResponseOptions {
  ttlMs: number;
  swrMs: number;
  sieMs: number;
  jitter: number | undefined;
  key: ((req: Request) => string) | undefined;
  scope: CacheResponseOptions['scope'];
  tags: CacheResponseOptions['tags'];
  vary: string[];
  maxBodySize: number;
  statuses: Set<number>;
  methods: Set<string>;
  shouldCache: CacheResponseOptions['shouldCache'];
  /** Which requests bypass the cache as per-user (see per-user.ts). */
  perUser: PerUserRules;
  name: string | undefined;
}

export function resolveResponseOptions(options: CacheResponseOptions): ResolvedResponseOptions {
  if (!options || typeof options !== 'object') {
    throw optionError('options', 'must be an object', "Pass { redis, ttl: '5m' }.");
  }
  checkKnownOptions(options, RESPONSE_KNOWN, 'cacheResponse', RESPONSE_RENAMED);
  if (options.ttl === undefined)
    throw optionError('ttl', 'is required', "Pass the fresh lifetime, e.g. ttl: '5m'.");
  const vary = options.vary ?? [];
  if (
    !Array.isArray(vary) ||
    vary.some((h) => typeof h !== 'string' || !/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(h))
  ) {
    throw optionError('vary', `must be an array of request header names; got ${shown(options.vary)}`);
  }
  const statuses = options.statuses ?? CACHE_DEFAULTS.statuses;
  if (!Array.isArray(statuses) || statuses.some((s) => !Number.isInteger(s) || s < 100 || s > 599)) {
    throw optionError('statuses', `must be an array of HTTP status codes; got ${shown(statuses)}`);
  }
  const methods = options.methods ?? CACHE_DEFAULTS.methods;
  if (!Array.isArray(methods) || methods.some((m) => typeof m !== 'string')) {
    throw optionError('methods', `must be an array of HTTP methods; got ${shown(methods)}`);
  }
  const maxBodySize = options.maxBodySize ?? CACHE_DEFAULTS.maxBodySize;
  if (!Number.isInteger(maxBodySize) || maxBodySize < 0) {
    throw numberOptionError(
      'maxBodySize',
      maxBodySize,
      `must be a whole number of bytes >= 0; got ${shown(maxBodySize)}`,
    );
  }
  const upper = methods.map((m) => m.toUpperCase());
  if (upper.includes('GET')) upper.push('HEAD');
  return {
    ttlMs: toMs(options.ttl, 'ttl'),
    swrMs: toMs(options.staleWhileRevalidate ?? 0, 'staleWhileRevalidate', { allowZero: true }),
    sieMs: toMs(options.staleIfError ?? 0, 'staleIfError', { allowZero: true }),
    jitter: options.jitter === undefined ? undefined : checkJitter(options.jitter),
    key: checkFunction(options.key, 'key'),
    scope: checkFunction(options.scope, 'scope'),
    tags: checkFunction(options.tags, 'tags'),
    vary: vary.map((h) => h.toLowerCase()).sort(),
    maxBodySize,
    statuses: new Set(statuses),
    methods: new Set(upper),
    shouldCache: checkFunction(options.shouldCache, 'shouldCache'),
    perUser: resolvePerUserRules(options, CACHE_DEFAULTS),
    name: options.name,
  };
}
