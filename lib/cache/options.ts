import type { Request } from 'express';
import { checkMaxBodySize } from '../body-size';
import { checkClient, type RedisClient } from '../client';
import { MAX_TIMER_MS, toMs } from '../duration';
import {
  checkKnownOptions,
  functionOption,
  numberOptionError,
  optionError,
  optionRangeError,
  shown,
} from '../errors';
import { checkPrefix, DEFAULT_PREFIX } from '../keys';
import { hasWarn, neverThrows } from '../logger';
import { MIN_LOCK_MS } from './lock';
import {
  CACHE_KNOWN,
  CACHE_RENAMED,
  L1_KNOWN,
  L1_RENAMED,
  RESPONSE_KNOWN,
  RESPONSE_RENAMED,
} from './option-names';
import { type PerUserRules, resolvePerUserRules } from './per-user';
import { isStringList } from './targets';
import type { CacheLogger, CacheResponseOptions, CreateCacheOptions, L1Options } from './types';

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
  sessionCookie:
    /sess|auth|token|jwt|login|logged|remember|identity|api[._-]?key|^wordpress_sec|(^|[._-])sid([._-]|$)|(^|[._-])u(ser)?[._-]?id([._-]|$)|^id$/i,
  // API keys and identities a gateway or proxy adds (oauth2-proxy, Azure Easy Auth, Cloudflare
  // Access, AWS ALB OIDC, Kong/APISIX consumers, mTLS client certificates): same risk.
  credentialHeader:
    /auth|token|jwt|sess|api[._-]?key|principal|consumer|credential|oidc|email|userinfo|forwarded-groups|client-(cert|s-dn|dn|verify)|(^|-)user(name|id)?(-(id|email|name))?$/i,
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
      min: MIN_LOCK_MS,
      max: MAX_TIMER_MS,
    }),
    jitter: checkJitter(options.jitter),
    name: checkName(options.name),
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

function checkName(name: unknown): string | undefined {
  if (name !== undefined && (typeof name !== 'string' || name === '')) {
    throw optionError('name', `must be a non-empty string (events carry it); got ${shown(name)}`);
  }
  return name;
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
  if (!hasWarn(logger)) {
    throw optionError(
      'logger',
      'must have a warn(details, message) method',
      'Pass a pino logger or console-like object.',
    );
  }
  return logger as CacheLogger;
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
  /** Query parameter names a cached request may carry (see `query`); undefined: any. */
  query: ReadonlySet<string> | undefined;
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
  const query = options.query;
  if (
    query !== undefined &&
    (!Array.isArray(query) || query.some((q) => typeof q !== 'string' || q === ''))
  ) {
    throw optionError(
      'query',
      `must be an array of query parameter names; got ${shown(query)}`,
      "e.g. query: ['page', 'sort']",
    );
  }
  const statuses = options.statuses ?? CACHE_DEFAULTS.statuses;
  if (!Array.isArray(statuses) || statuses.some((s) => !Number.isInteger(s))) {
    throw optionError('statuses', `must be an array of HTTP status codes; got ${shown(statuses)}`);
  }
  const outside = statuses.find((s) => s < 100 || s > 599);
  if (outside !== undefined) {
    throw optionRangeError('statuses', `holds ${outside}, which is no HTTP status code (100 to 599)`);
  }
  const partial = statuses.find((s) => s < 200 || s === 206 || s === 304);
  if (partial !== undefined) {
    throw optionError(
      'statuses',
      `cannot include ${partial}: it answers one request only (a 206 carries just the Range that request asked for, a 304 no body, a 1xx is interim)`,
      'Leave it out: Range requests are answered from stored 200s, and If-None-Match with 304s.',
    );
  }
  const methods = options.methods ?? CACHE_DEFAULTS.methods;
  if (!isStringList(methods)) {
    throw optionError('methods', `must be an array of HTTP methods; got ${shown(methods)}`);
  }
  const maxBodySize = checkMaxBodySize(options.maxBodySize ?? CACHE_DEFAULTS.maxBodySize);
  const upper = methods.map((m) => m.toUpperCase());
  const unsafe = upper.find((m) => m !== 'GET' && m !== 'HEAD');
  if (unsafe !== undefined && options.key === undefined) {
    // The default key is the method and URL: two POSTs with different bodies would share one entry,
    // and one client's answer would be served to the other.
    throw optionError(
      'methods',
      `includes ${unsafe}, whose answer depends on the request body, which the default key leaves out`,
      'Pass a key function that covers what the body asks for (e.g. one that hashes req.body), or cache GET only.',
    );
  }
  if (upper.includes('GET')) upper.push('HEAD');
  return {
    ttlMs: toMs(options.ttl, 'ttl'),
    swrMs: toMs(options.staleWhileRevalidate ?? 0, 'staleWhileRevalidate', { allowZero: true }),
    sieMs: toMs(options.staleIfError ?? 0, 'staleIfError', { allowZero: true }),
    jitter: options.jitter === undefined ? undefined : checkJitter(options.jitter),
    key: functionOption(options.key, 'key'),
    scope: functionOption(options.scope, 'scope'),
    tags: functionOption(options.tags, 'tags'),
    vary: vary.map((h) => h.toLowerCase()).sort(),
    query: query === undefined ? undefined : new Set(query),
    maxBodySize,
    statuses: new Set(statuses),
    methods: new Set(upper),
    shouldCache: functionOption(options.shouldCache, 'shouldCache'),
    perUser: resolvePerUserRules(options, CACHE_DEFAULTS),
    name: checkName(options.name),
  };
}
