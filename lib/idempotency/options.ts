import type { Request } from 'express';
import { checkMaxBodySize } from '../body-size';
import { checkClient, type RedisClient } from '../client';
import { type Duration, MAX_TIMER_MS, toMs } from '../duration';
import { checkKnownOptions, optionError, optionRangeError, shown } from '../errors';
import { checkPrefix, DEFAULT_PREFIX } from '../keys';
import { defaultFingerprint } from './fingerprint';

/** `timeout` when not given (lower with a `lockTtl` under 2 s: see the check below). */
const DEFAULT_TIMEOUT_MS = 500;

/** What a `scope` function may return; `undefined`, `null` or `''` fall back to the client IP. */
export type ScopeValue = string | number | undefined | null;

/** Options of {@link idempotency}. Only `redis` is required. */
export interface IdempotencyOptions {
  /** An ioredis `Redis` or `Cluster` (from `createRedis()` or your own `new Redis(url)`). */
  redis: RedisClient;
  /**
   * Whose key space a request belongs to; keys never cross scopes, so one user can never replay
   * another's response. Default: `req.ip`. Apps with authentication should pass the user or
   * account id, e.g. `req => req.session?.userId`: two users behind one NAT share an IP.
   */
  scope?: ((req: Request) => ScopeValue | Promise<ScopeValue>) | undefined;
  /** Request header carrying the key. Default `'Idempotency-Key'`. */
  header?: string | undefined;
  /** Answer 400 when the header is missing. Default `false` (requests without a key pass unprotected). */
  required?: boolean | undefined;
  /** Methods the middleware protects; others pass through. Default `['POST', 'PATCH']`. */
  methods?: readonly string[] | undefined;
  /** How long a completed response is kept for replay. Default `'24h'`. */
  ttl?: Duration | undefined;
  /**
   * Lease of an in-flight request: a crashed worker's reservation expires after this long. A live
   * handler renews it every `lockTtl / 3`, so a slow handler is never run twice. Default `'30s'`.
   */
  lockTtl?: Duration | undefined;
  /**
   * Identifies the request payload; reusing a key with a different fingerprint answers 422.
   * Default: SHA-256 of method, path, query and canonical body (see `defaultFingerprint`).
   */
  fingerprint?: ((req: Request) => string | Buffer | Promise<string | Buffer>) | undefined;
  /**
   * Which final statuses are stored for replay; the others release the key so the client may
   * retry. A list of statuses or a predicate. Default: every status below 500 except the "try
   * again later" ones, 408, 425 and 429 (see `defaultStoreStatus`).
   */
  storeStatuses?: readonly number[] | ((status: number) => boolean) | undefined;
  /** Largest response body (bytes) that is stored; a larger one is sent but not stored, and the key is released. Default 1 MiB; at most 511 MiB. */
  maxBodySize?: number | undefined;
  /**
   * When Redis is down or slower than `timeout`: `'closed'` answers 503 + Retry-After (the
   * exactly-once guarantee cannot be given); `'open'` runs the handler without protection
   * (a process warning once per outage, and a `fail-open` event per request). Default `'closed'`.
   */
  failMode?: 'closed' | 'open' | undefined;
  /**
   * Time budget of each Redis call. At most `lockTtl / 4` (a slower reply could let the lease lapse
   * while the handler runs). Default `'500ms'`, or `lockTtl / 4` when that is less.
   */
  timeout?: Duration | undefined;
  /** `Retry-After` (rounded up to whole seconds) on 409 and 503 answers. Default `'1s'`. */
  retryAfter?: Duration | undefined;
  /** Key prefix. Default `'erk:'`. */
  prefix?: string | undefined;
  /** Instance name carried by events. */
  name?: string | undefined;
}

/** Options after defaults and validation: the only place defaults live. */
export interface ResolvedIdempotencyOptions {
  redis: RedisClient;
  scope: ((req: Request) => ScopeValue | Promise<ScopeValue>) | undefined;
  header: string;
  required: boolean;
  methods: ReadonlySet<string>;
  ttlMs: number;
  lockTtlMs: number;
  heartbeatMs: number;
  fingerprint: (req: Request) => string | Buffer | Promise<string | Buffer>;
  shouldStore: (status: number) => boolean;
  maxBodySize: number;
  failMode: 'closed' | 'open';
  timeoutMs: number;
  retryAfterSeconds: number;
  prefix: string;
  name: string | undefined;
}

/** Exactly the names of {@link IdempotencyOptions}: anything else is refused, never ignored. */
const KNOWN = new Set([
  'redis',
  'scope',
  'header',
  'required',
  'methods',
  'ttl',
  'lockTtl',
  'fingerprint',
  'storeStatuses',
  'maxBodySize',
  'failMode',
  'timeout',
  'retryAfter',
  'prefix',
  'name',
]);

// Names other idempotency middlewares (express-idempotency, idempotency-middleware…) use.
const RENAMED: Record<string, string> = {
  headerName: 'use "header"',
  keyHeader: 'use "header"',
  idempotencyKeyHeader: 'use "header"',
  expiresIn: 'use "ttl" (ms or a duration string such as \'24h\')',
  ttlMs: 'use "ttl" (ms or a duration string such as \'24h\')',
  expire: 'use "ttl"',
  lockTimeout: 'use "lockTtl" (the lease of an in-flight request)',
  store: 'pass the ioredis client as "redis"',
  client: 'pass the ioredis client as "redis"',
  keyGenerator: 'use "scope" (whose key space) or "fingerprint" (what the payload is)',
  requireKey: 'use "required"',
};

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const METHOD = /^[A-Z]+$/;

export function resolveOptions(input: IdempotencyOptions): ResolvedIdempotencyOptions {
  if (!input || typeof input !== 'object') {
    throw optionError('options', 'must be an object', 'Call idempotency({ redis }).');
  }
  checkKnownOptions(input, KNOWN, 'idempotency', RENAMED);
  const redis = checkClient(input.redis);
  const {
    scope,
    header = 'Idempotency-Key',
    required = false,
    methods = ['POST', 'PATCH'],
    ttl = '24h',
    lockTtl = '30s',
    fingerprint = defaultFingerprint,
    storeStatuses,
    maxBodySize = 1024 * 1024,
    failMode = 'closed',
    timeout,
    retryAfter = '1s',
    prefix = DEFAULT_PREFIX,
    name,
  } = input;

  if (scope !== undefined && typeof scope !== 'function') {
    throw optionError(
      'scope',
      `must be a function (req) => string; got ${typeof scope}`,
      'e.g. req => req.user.id',
    );
  }
  if (typeof header !== 'string' || !HEADER_NAME.test(header)) {
    throw optionError(
      'header',
      `must be an HTTP header name; got ${shown(header)}`,
      "The default is 'Idempotency-Key'.",
    );
  }
  if (typeof required !== 'boolean')
    throw optionError('required', `must be a boolean; got ${typeof required}`);
  if (!Array.isArray(methods) || methods.length === 0 || !methods.every((m) => typeof m === 'string')) {
    throw optionError('methods', 'must be a non-empty array of HTTP methods', "e.g. ['POST', 'PATCH'].");
  }
  const methodSet = new Set(methods.map((m) => m.toUpperCase()));
  for (const m of methodSet) {
    if (!METHOD.test(m)) throw optionError('methods', `holds an invalid method ${JSON.stringify(m)}`);
  }
  const ttlMs = toMs(ttl, 'ttl', { min: 1000 });
  const lockTtlMs = toMs(lockTtl, 'lockTtl', { min: 100, max: MAX_TIMER_MS });
  if (lockTtlMs > ttlMs) {
    throw optionRangeError(
      'lockTtl',
      `(${lockTtlMs} ms) must not exceed ttl (${ttlMs} ms)`,
      'Raise ttl or lower lockTtl.',
    );
  }
  if (typeof fingerprint !== 'function') {
    throw optionError(
      'fingerprint',
      `must be a function (req) => string | Buffer; got ${typeof fingerprint}`,
    );
  }
  const shouldStore = resolveStoreStatuses(storeStatuses);
  checkMaxBodySize(maxBodySize);
  if (failMode !== 'closed' && failMode !== 'open') {
    throw optionError('failMode', `must be 'closed' or 'open'; got ${shown(failMode)}`);
  }
  // A reservation lands before its reply, and renewals go every lockTtl / 3: a call slower than
  // lockTtl / 4 could let the lease lapse while the handler runs, and another request run it too.
  const maxTimeoutMs = Math.floor(lockTtlMs / 4);
  const timeoutMs =
    timeout === undefined
      ? Math.min(DEFAULT_TIMEOUT_MS, maxTimeoutMs)
      : toMs(timeout, 'timeout', { min: 1, max: MAX_TIMER_MS });
  if (timeoutMs > maxTimeoutMs) {
    throw optionRangeError(
      'timeout',
      `(${timeoutMs} ms) must be at most lockTtl / 4 (${maxTimeoutMs} ms): a slower Redis reply could let the lease lapse while the handler runs, and a retry run it a second time`,
      'Lower timeout or raise lockTtl.',
    );
  }
  const retryAfterMs = toMs(retryAfter, 'retryAfter', { min: 1 });
  if (name !== undefined && typeof name !== 'string')
    throw optionError('name', `must be a string; got ${typeof name}`);

  return {
    redis,
    scope,
    header: header.toLowerCase(),
    required,
    methods: methodSet,
    ttlMs,
    lockTtlMs,
    // Three renewals per lease: one lost or slow heartbeat still leaves the lease alive.
    heartbeatMs: Math.max(1, Math.floor(lockTtlMs / 3)),
    fingerprint,
    shouldStore,
    maxBodySize,
    failMode,
    timeoutMs,
    retryAfterSeconds: Math.max(1, Math.ceil(retryAfterMs / 1000)),
    prefix: checkPrefix(prefix),
    name,
  };
}

/**
 * Statuses below 500 that still mean "the request was not carried out, send it again later": a
 * rate limiter's 429 mounted after this middleware, a 408 from a body-read timeout, a 425. Storing
 * one would replay the refusal to every retry for the whole `ttl`, and the retry that the answer
 * itself asks for could never succeed.
 */
const RETRY_LATER = new Set([408, 425, 429]);

/** The default of `storeStatuses`: every status below 500 except 408, 425 and 429. */
export function defaultStoreStatus(status: number): boolean {
  return status < 500 && !RETRY_LATER.has(status);
}

function resolveStoreStatuses(value: IdempotencyOptions['storeStatuses']): (status: number) => boolean {
  if (value === undefined) return defaultStoreStatus;
  if (typeof value === 'function') return value;
  if (Array.isArray(value) && value.every((s) => Number.isInteger(s))) {
    const outside = value.find((s) => s < 100 || s > 599);
    if (outside !== undefined) {
      throw optionRangeError('storeStatuses', `holds ${outside}, which is no HTTP status code (100 to 599)`);
    }
    const set = new Set(value);
    return (status) => set.has(status);
  }
  throw optionError(
    'storeStatuses',
    'must be a list of HTTP statuses or a function (status) => boolean',
    'e.g. [200, 201, 400, 404] or s => s < 500.',
  );
}
