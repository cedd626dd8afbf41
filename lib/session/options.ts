import { checkClient, type RedisClient } from '../client';
import { type Duration, MAX_TIMER_MS, toMs } from '../duration';
import { checkKnownOptions, numberOptionError, optionError, shown } from '../errors';
import { checkPrefix, DEFAULT_PREFIX } from '../keys';
import { type KitCookieOptions, resolveCookie, type SessionCookieOptions } from './cookie-options';
import { resolveSecrets } from './secrets';

/** Options of {@link redisSession}. */
export interface RedisSessionOptions {
  /** An ioredis `Redis` or `Cluster` (e.g. `createRedis()` or your own `new Redis(url)`). Required. */
  redis: RedisClient;
  /**
   * Signs the session cookie. An array rotates secrets: the first signs new cookies, every entry
   * verifies. Required (at least 32 characters each) when `NODE_ENV=production`; elsewhere a random
   * per-process secret is used with a warning, so sessions do not survive a restart.
   */
  secret?: string | string[] | undefined;
  /**
   * Cookie name. Default `'sid'` (not express-session's `connect.sid`, which fingerprints the stack).
   * A `__Host-`/`__Secure-` name must keep the cookie settings browsers require for it.
   */
  name?: string | undefined;
  /** Session lifetime, in ms or as `'30m'`, `'1d'`. With `rolling`, counted from the last request. Default `'1d'`. */
  ttl?: Duration | undefined;
  /**
   * Sliding expiry: every request re-sends the cookie and refreshes the TTL in Redis. With `false`
   * both keep the expiry they got when the session was last written. Default `true`.
   */
  rolling?: boolean | undefined;
  /**
   * Cookie overrides, merged over the secure defaults
   * `{ httpOnly: true, sameSite: 'lax', secure: 'auto', path: '/' }`.
   */
  cookie?: SessionCookieOptions | undefined;
  /** Prefix of every key this middleware writes. Default `'erk:'`. */
  prefix?: string | undefined;
  /** Time budget of each Redis call; past it the request gets 503. Default `'500ms'`. */
  timeout?: Duration | undefined;
  /**
   * express-session's `proxy`: `undefined` (default) follows Express's `trust proxy` setting to decide
   * whether a request is HTTPS; `true`/`false` force trusting / ignoring `X-Forwarded-Proto`.
   */
  proxy?: boolean | undefined;
  /**
   * Most live sessions one user keeps. A login (or index refresh) past it ends, of the user's
   * sessions logged in before it, those that would expire soonest, never itself (of logins racing
   * past it, the later ends the earlier), so `list()` and `logoutAll()` stay cheap and one account cannot grow
   * its index without bound. `false` for no cap. Default `100`.
   */
  maxSessionsPerUser?: number | false | undefined;
}

/** Options after validation and defaulting — the one place defaults live. */
export interface ResolvedSessionOptions {
  redis: RedisClient;
  secrets: string[];
  name: string;
  ttlMs: number;
  rolling: boolean;
  cookie: KitCookieOptions;
  prefix: string;
  timeoutMs: number;
  proxy: boolean | undefined;
  /** How long a destroyed session's key stays as a tombstone that refuses late writes. */
  tombstoneMs: number;
  /** `Infinity` when `maxSessionsPerUser: false`. */
  maxSessionsPerUser: number;
}

/** Smallest secret length accepted in production: 32 characters ≈ 192 bits from a base64 generator. */

/** Exactly the names of {@link RedisSessionOptions}. */
const KNOWN = new Set([
  'redis',
  'secret',
  'name',
  'ttl',
  'rolling',
  'cookie',
  'prefix',
  'timeout',
  'proxy',
  'maxSessionsPerUser',
]);

const USE_TTL = 'set the session lifetime with the "ttl" option instead';

// express-session (and connect-redis) options people bring along: what they are, or why they are fixed.
const RENAMED: Record<string, string> = {
  resave:
    "fixed to false: a request that changes nothing only refreshes the TTL, so it cannot put back a stale copy over another request's change",
  saveUninitialized: 'fixed to false: visitors who never use the session cost no Redis key and get no cookie',
  unset: "fixed to 'keep': end a session with logout(req, res), which also removes it from the user index",
  store: 'the store is always the kit\'s own Redis store; pass the ioredis client as "redis"',
  genid: "not supported: session ids are always express-session's 192 random bits, renewed by login()",
  key: 'use "name" (the cookie name)',
  client: 'pass the ioredis client as "redis"',
  maxAge: USE_TTL,
  expires: USE_TTL,
};

const COOKIE_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Validates and defaults {@link RedisSessionOptions}; throws TypeError/RangeError naming the option. */
export function resolveOptions(options: RedisSessionOptions): ResolvedSessionOptions {
  if (!options || typeof options !== 'object') {
    throw optionError('options', 'must be an object', 'Call redisSession({ redis, secret }).');
  }
  checkKnownOptions(options, KNOWN, 'redisSession', RENAMED);
  const redis = checkClient(options.redis);
  const secrets = resolveSecrets(options.secret);
  const name = options.name ?? 'sid';
  if (typeof name !== 'string' || !COOKIE_NAME.test(name)) {
    throw optionError(
      'name',
      `must be a cookie name (letters, digits, !#$%&'*+-.^_\`|~); got ${shown(name)}`,
    );
  }
  const ttlMs = toMs(options.ttl ?? '1d', 'ttl', { min: 1000 });
  const rolling = options.rolling ?? true;
  if (typeof rolling !== 'boolean')
    throw optionError('rolling', `must be true or false; got ${shown(rolling)}`);
  const timeoutMs = toMs(options.timeout ?? '500ms', 'timeout', { max: MAX_TIMER_MS });
  const prefix = checkPrefix(options.prefix ?? DEFAULT_PREFIX);
  if (options.proxy !== undefined && typeof options.proxy !== 'boolean') {
    throw optionError('proxy', `must be true, false or undefined; got ${shown(options.proxy)}`);
  }
  const maxSessions = options.maxSessionsPerUser ?? 100;
  if (maxSessions !== false && !(Number.isSafeInteger(maxSessions) && maxSessions >= 1)) {
    throw numberOptionError(
      'maxSessionsPerUser',
      maxSessions,
      `must be a whole number >= 1, or false for no cap; got ${shown(maxSessions)}`,
    );
  }
  return {
    redis,
    secrets,
    name,
    ttlMs,
    rolling,
    cookie: resolveCookie(options.cookie, ttlMs, name),
    prefix,
    timeoutMs,
    proxy: options.proxy,
    tombstoneMs: Math.min(ttlMs, 60_000),
    maxSessionsPerUser: maxSessions === false ? Number.POSITIVE_INFINITY : maxSessions,
  };
}
