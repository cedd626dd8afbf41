import type { NextFunction, Request, Response } from 'express';
import ms from 'ms';
import { checkClient, type RedisClient } from '../client';
import { MAX_TIMER_MS, toMs } from '../duration';
import {
  booleanOption,
  checkKnownOptions,
  functionOption,
  numberOptionError,
  optionError,
  optionRangeError,
  shown,
} from '../errors';
import { checkPrefix, DEFAULT_PREFIX } from '../keys';
import { hasWarn, neverThrows } from '../logger';
import { ALGORITHM_CODE, KEY_CODE } from './script';
import type { Algorithm, DeniedInfo, HeadersMode, RateLimitOptions, RateLimitPolicy } from './types';

/** Every default of the rate limiter, in one place. */
export const DEFAULTS = {
  algorithm: 'sliding-window' as Algorithm,
  ipv6Subnet: 56,
  cost: 1,
  headers: 'draft-8' as HeadersMode,
  statusCode: 429,
  failMode: 'open' as const,
  timeoutMs: 250,
  prefix: DEFAULT_PREFIX,
  denyCacheMax: 10_000,
  skipSuccessfulRequests: false,
  skipFailedRequests: false,
  dryRun: false,
  coalesce: true,
};

/** Longest window: a year (plus a day), which keeps every script integer exact in Lua doubles. */
const MAX_WINDOW_MS = 366 * 24 * 3600 * 1000;
const GCRA_MIN_INTERVAL_US = 100;

/**
 * Largest limit: a trillion per window. Lua prints numbers with 14 significant digits, so counts
 * beyond this would reach Redis in exponent form (which it refuses) or lose units.
 */
export const MAX_LIMIT = 1e12;

export interface ResolvedPolicy {
  name: string;
  limit: number;
  windowMs: number;
  algorithm: Algorithm;
  code: string;
  /** Key part after the `{client}` hash tag. */
  keyTail: string;
}

export interface ResolvedOptions {
  redis: RedisClient;
  policies: ResolvedPolicy[];
  key: ((req: Request, res: Response) => string | number | Promise<string | number>) | undefined;
  ipv6Subnet: number | false;
  cost: number | ((req: Request, res: Response) => number | Promise<number>);
  skip: ((req: Request, res: Response) => boolean | Promise<boolean>) | undefined;
  /** Largest cost a request may have: the smallest policy limit (more could never pass). */
  maxCost: number;
  skipSuccessfulRequests: boolean;
  skipFailedRequests: boolean;
  requestWasSuccessful: (req: Request, res: Response) => boolean | PromiseLike<boolean>;
  dryRun: boolean;
  headers: HeadersMode | false;
  statusCode: number;
  message: string | undefined;
  handler: ((req: Request, res: Response, next: NextFunction, info: DeniedInfo) => void) | undefined;
  failMode: 'open' | 'closed';
  timeoutMs: number;
  name: string | undefined;
  /** Key part before the `{client}` hash tag. */
  keyHead: string;
  denyCacheMax: number;
  coalesce: boolean;
  logger: { warn(message: string): void };
}

const KNOWN = new Set([
  'redis',
  'limit',
  'window',
  'algorithm',
  'policies',
  'key',
  'ipv6Subnet',
  'cost',
  'skip',
  'skipSuccessfulRequests',
  'skipFailedRequests',
  'requestWasSuccessful',
  'dryRun',
  'headers',
  'statusCode',
  'message',
  'handler',
  'failMode',
  'timeout',
  'prefix',
  'name',
  'denyCache',
  'coalesce',
  'logger',
]);

// express-rate-limit option names people will bring along, and what they are called here.
const RENAMED: Record<string, string> = {
  windowMs: 'use "window" (ms or a duration string such as \'15m\')',
  max: 'use "limit"',
  keyGenerator: 'use "key"',
  standardHeaders: "use \"headers: 'draft-8'\" (or 'draft-7' / 'draft-6')",
  legacyHeaders: 'use "headers: \'legacy\'"',
  store: 'pass the ioredis client as "redis"',
  passOnStoreError: 'use "failMode: \'open\'" (the default)',
};

const POLICY_KNOWN = new Set(['limit', 'window', 'algorithm', 'name']);
const DENY_CACHE_KNOWN = new Set(['max']);
const POLICY_RENAMED: Record<string, string> = { windowMs: RENAMED.windowMs!, max: RENAMED.max! };

const SF_STRING = /^[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}$/;
const NAME = /^[A-Za-z0-9_.-]{1,64}$/;

function isWhole(value: unknown, min: number): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= min;
}

function checkAlgorithm(algorithm: unknown, option: string): asserts algorithm is Algorithm {
  if (typeof algorithm !== 'string' || !Object.hasOwn(ALGORITHM_CODE, algorithm)) {
    throw optionError(
      option,
      `must be one of ${Object.keys(ALGORITHM_CODE).join(', ')}; got ${shown(algorithm)}`,
    );
  }
}

function formatWindow(windowMs: number): string {
  const short = ms(windowMs);
  return ms(short as ms.StringValue) === windowMs ? short : `${windowMs}ms`;
}

function resolvePolicy(
  policy: Partial<RateLimitPolicy>,
  where: string,
  defaultAlgorithm: Algorithm,
): Omit<ResolvedPolicy, 'keyTail'> {
  // The top-level options are checked the same way: a misspelt "algoritm" must not quietly fall
  // back to the default algorithm.
  if (where) checkKnownOptions(policy, POLICY_KNOWN, 'policy', POLICY_RENAMED, where);
  const { limit, algorithm = defaultAlgorithm } = policy;
  if (!isWhole(limit, 1) || limit > MAX_LIMIT) {
    throw numberOptionError(
      `${where}limit`,
      limit,
      `must be a whole number from 1 to ${MAX_LIMIT}; got ${shown(limit)}`,
      'It is the number of requests (or cost units) allowed per window.',
    );
  }
  if (policy.window === undefined) throw optionError(`${where}window`, 'is required', "e.g. window: '1m'");
  const windowMs = toMs(policy.window, `${where}window`, { min: 1 });
  if (windowMs > MAX_WINDOW_MS) {
    throw optionRangeError(`${where}window`, `must be at most 366 days; got ${shown(policy.window)}`);
  }
  checkAlgorithm(algorithm, `${where}algorithm`);
  if (algorithm === 'token-bucket' && limit * windowMs > Number.MAX_SAFE_INTEGER) {
    throw optionRangeError(`${where}limit`, 'times the window (ms) must stay below 2^53 for token-bucket');
  }
  // gcra keeps its emission interval (window / limit) in whole µs; under 100 µs the rounding would
  // move the real rate by more than 0.5 % (and under 0.5 µs make it a different limit altogether).
  if (algorithm === 'gcra' && (windowMs * 1000) / limit < GCRA_MIN_INTERVAL_US) {
    throw optionRangeError(
      `${where}limit`,
      `is too high for gcra over ${formatWindow(windowMs)}: window / limit must be at least ${GCRA_MIN_INTERVAL_US} µs (at most ${1000 / GCRA_MIN_INTERVAL_US} per ms); got ${limit}`,
      "Use algorithm 'token-bucket', which admits the same requests and counts in exact integers.",
    );
  }
  const name = policy.name ?? `${limit}-in-${formatWindow(windowMs)}`;
  if (typeof name !== 'string' || !SF_STRING.test(name)) {
    throw optionError(
      `${where}name`,
      `must be 1-64 printable ASCII characters without '"' or '\\'; got ${shown(name)}`,
    );
  }
  return { name, limit, windowMs, algorithm, code: ALGORITHM_CODE[algorithm] };
}

/** Validates and defaults the options once, at construction. Throws TypeError/RangeError naming the option. */
export function resolveOptions(options: RateLimitOptions): ResolvedOptions {
  if (!options || typeof options !== 'object') {
    throw optionError('options', 'must be an object', 'e.g. rateLimit({ redis, limit: 100, window: "1m" })');
  }
  checkKnownOptions(options, KNOWN, 'rateLimit', RENAMED);
  const redis = checkClient(options.redis);
  const algorithm = options.algorithm ?? DEFAULTS.algorithm;
  // Checked even when every policy names its own, so a typo is never silently ignored.
  checkAlgorithm(algorithm, 'algorithm');

  let raw: Array<Partial<RateLimitPolicy>>;
  let where: (i: number) => string;
  if (options.policies !== undefined) {
    if (options.limit !== undefined || options.window !== undefined) {
      throw optionError(
        'policies',
        'cannot be combined with "limit"/"window"',
        'Put every quota in "policies".',
      );
    }
    if (!Array.isArray(options.policies) || options.policies.length === 0) {
      throw optionError('policies', 'must be a non-empty array of { limit, window, algorithm? }');
    }
    if (options.policies.length > 16) throw optionRangeError('policies', 'must hold at most 16 policies');
    raw = options.policies;
    where = (i) => `policies[${i}].`;
  } else {
    if (options.limit === undefined) {
      throw optionError('limit', 'is required', 'e.g. rateLimit({ redis, limit: 100, window: "1m" })');
    }
    raw = [{ limit: options.limit, window: options.window!, algorithm }];
    where = () => '';
  }
  const resolved = raw.map((p, i) => {
    if (!p || typeof p !== 'object')
      throw optionError(`policies[${i}]`, 'must be an object { limit, window }');
    return resolvePolicy(p, where(i), algorithm);
  });
  const names = new Set(resolved.map((p) => p.name));
  if (names.size !== resolved.length) {
    throw optionError('policies', 'have duplicate names', 'Give each policy a distinct "name".');
  }
  // Same algorithm, limit and window: the same Redis key, which both would read and write in one call.
  const quotas = new Map<string, number>();
  resolved.forEach((p, i) => {
    const quota = `${p.algorithm}:${p.limit}:${p.windowMs}`;
    const first = quotas.get(quota);
    if (first !== undefined) {
      throw optionError(
        `policies[${i}]`,
        `is the same quota as policies[${first}] (${p.algorithm}, ${p.limit} per ${p.windowMs} ms)`,
        'Remove one: the same quota twice limits nothing more.',
      );
    }
    quotas.set(quota, i);
  });
  const minLimit = Math.min(...resolved.map((p) => p.limit));

  const cost = options.cost ?? DEFAULTS.cost;
  if (typeof cost === 'number') {
    if (!isWhole(cost, 1)) throw optionRangeError('cost', `must be a whole number >= 1; got ${cost}`);
    if (cost > minLimit) {
      throw optionRangeError(
        'cost',
        `(${cost}) is larger than the limit (${minLimit})`,
        'No request could ever pass.',
      );
    }
  } else if (typeof cost !== 'function') {
    throw optionError('cost', `must be a number or a function (req) => number; got ${typeof cost}`);
  }
  functionOption(options.key, 'key');
  functionOption(options.skip, 'skip');
  functionOption(options.handler, 'handler');
  functionOption(options.requestWasSuccessful, 'requestWasSuccessful');

  const ipv6Subnet = options.ipv6Subnet ?? DEFAULTS.ipv6Subnet;
  if (ipv6Subnet !== false && !(isWhole(ipv6Subnet, 1) && ipv6Subnet <= 128)) {
    throw numberOptionError(
      'ipv6Subnet',
      ipv6Subnet,
      `must be a prefix length 1-128 or false; got ${shown(ipv6Subnet)}`,
    );
  }
  const headers = options.headers === undefined ? DEFAULTS.headers : options.headers;
  if (headers !== false && !['draft-8', 'draft-7', 'draft-6', 'legacy'].includes(headers)) {
    throw optionError(
      'headers',
      `must be 'draft-8', 'draft-7', 'draft-6', 'legacy' or false; got ${shown(headers)}`,
    );
  }
  const statusCode = options.statusCode ?? DEFAULTS.statusCode;
  if (!isWhole(statusCode, 400) || statusCode > 599) {
    throw numberOptionError(
      'statusCode',
      statusCode,
      `must be an HTTP error status 400-599; got ${shown(statusCode)}`,
    );
  }
  if (options.message !== undefined && typeof options.message !== 'string') {
    throw optionError(
      'message',
      `must be a string; got ${typeof options.message}`,
      'Use "handler" for custom bodies.',
    );
  }
  const failMode = options.failMode ?? DEFAULTS.failMode;
  if (failMode !== 'open' && failMode !== 'closed') {
    throw optionError('failMode', `must be 'open' or 'closed'; got ${shown(failMode)}`);
  }
  const timeoutMs =
    options.timeout === undefined
      ? DEFAULTS.timeoutMs
      : toMs(options.timeout, 'timeout', { min: 1, max: MAX_TIMER_MS });
  const prefix = checkPrefix(options.prefix ?? DEFAULTS.prefix);
  const name = options.name;
  if (name !== undefined && (typeof name !== 'string' || !NAME.test(name))) {
    throw optionError('name', `must be 1-64 characters of A-Z a-z 0-9 _ . -; got ${shown(name)}`);
  }
  let denyCacheMax = DEFAULTS.denyCacheMax;
  if (options.denyCache === false) denyCacheMax = 0;
  else if (options.denyCache !== undefined) {
    if (
      options.denyCache === null ||
      typeof options.denyCache !== 'object' ||
      Array.isArray(options.denyCache)
    ) {
      throw optionError(
        'denyCache',
        `must be false or { max }; got ${shown(options.denyCache)}`,
        'Use denyCache: false to turn it off.',
      );
    }
    checkKnownOptions(options.denyCache, DENY_CACHE_KNOWN, 'denyCache', {}, 'denyCache.');
    const max = options.denyCache.max ?? DEFAULTS.denyCacheMax;
    if (!isWhole(max, 1))
      throw numberOptionError('denyCache.max', max, `must be a whole number >= 1; got ${shown(max)}`);
    denyCacheMax = max;
  }
  const coalesce = booleanOption(options.coalesce, 'coalesce', DEFAULTS.coalesce);
  const logger = options.logger ?? console;
  if (!hasWarn(logger)) throw optionError('logger', 'must have a warn(message) method');

  const keyHead = `${prefix}rl${name ? `:${name}` : ''}:{`;
  const policies = resolved.map((p) => ({
    ...p,
    keyTail: `}:${KEY_CODE[p.algorithm]}:${p.limit}:${p.windowMs}`,
  }));
  return {
    redis,
    policies,
    key: options.key,
    ipv6Subnet,
    cost,
    skip: options.skip,
    maxCost: minLimit,
    skipSuccessfulRequests: booleanOption(
      options.skipSuccessfulRequests,
      'skipSuccessfulRequests',
      DEFAULTS.skipSuccessfulRequests,
    ),
    skipFailedRequests: booleanOption(
      options.skipFailedRequests,
      'skipFailedRequests',
      DEFAULTS.skipFailedRequests,
    ),
    requestWasSuccessful: options.requestWasSuccessful ?? ((_req, res) => res.statusCode < 400),
    dryRun: booleanOption(options.dryRun, 'dryRun', DEFAULTS.dryRun),
    headers,
    statusCode,
    message: options.message,
    handler: options.handler,
    failMode,
    timeoutMs,
    name,
    keyHead,
    denyCacheMax,
    coalesce,
    logger: neverThrows(logger),
  };
}
