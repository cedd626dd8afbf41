import { randomBytes } from 'node:crypto';
import type { CookieOptions } from 'express-session';
import { checkClient, type RedisClient } from '../client';
import { type Duration, MAX_TIMER_MS, toMs } from '../duration';
import { checkKnownOptions, numberOptionError, optionError, optionRangeError, shown } from '../errors';
import { checkPrefix, DEFAULT_PREFIX } from '../keys';

/**
 * Cookie settings you may override. Lifetime comes from `ttl`, so `maxAge`/`expires` are not accepted;
 * `signed` and `encode` neither, as express-session ignores them (the cookie is always signed).
 */
export type SessionCookieOptions = Omit<
  CookieOptions,
  'maxAge' | 'expires' | 'signed' | 'encode' | 'sameSite'
> & {
  /**
   * `'lax'` (default), `'strict'`, `'none'` (any case), `true` (Strict), `false` (no attribute), or
   * `'auto'`: `None` over HTTPS and `Lax` over HTTP, as express-session resolves it.
   */
  sameSite?: CookieOptions['sameSite'] | 'auto' | undefined;
};

/** The resolved cookie settings: express-session's, with its `sameSite: 'auto'` (missing from its types). */
export type KitCookieOptions = Omit<CookieOptions, 'sameSite'> & {
  sameSite?: CookieOptions['sameSite'] | 'auto';
};

const SAME_SITE_WORDS: ReadonlySet<string> = new Set(['lax', 'strict', 'none']);

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
export const MIN_SECRET_LENGTH = 32;

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

/** The cookie settings express-session applies, less the lifetime (from `ttl`). */
const COOKIE_KNOWN = new Set(['domain', 'path', 'httpOnly', 'secure', 'sameSite', 'partitioned', 'priority']);

const COOKIE_RENAMED: Record<string, string> = {
  signed: 'the session cookie is always signed with "secret"',
  encode: 'express-session ignores it: the cookie value is always the signed session id',
  name: 'use the top-level "name" option',
};

const COOKIE_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
let warnedAboutSecret = false;

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

function resolveCookie(
  overrides: SessionCookieOptions | undefined,
  ttlMs: number,
  name: string,
): KitCookieOptions {
  if (overrides !== undefined && (typeof overrides !== 'object' || overrides === null)) {
    throw optionError('cookie', 'must be an object of cookie settings', "E.g. { domain: 'example.com' }.");
  }
  const given = (overrides ?? {}) as KitCookieOptions;
  for (const lifetime of ['maxAge', 'expires'] as const) {
    if (lifetime in given) {
      throw optionError(
        `cookie.${lifetime}`,
        'is not accepted',
        "Set the session lifetime with the 'ttl' option instead.",
      );
    }
  }
  checkKnownOptions(given, COOKIE_KNOWN, 'cookie', COOKIE_RENAMED, 'cookie.');
  const cookie: KitCookieOptions = {
    path: '/',
    httpOnly: true,
    sameSite: 'lax',
    secure: 'auto',
    ...given,
    maxAge: ttlMs,
  };
  const { sameSite } = cookie;
  // The cookie library refuses any other value on every response (a 500), and express-session
  // resolves 'auto' only spelled so.
  if (
    sameSite !== undefined &&
    typeof sameSite !== 'boolean' &&
    sameSite !== 'auto' &&
    !(typeof sameSite === 'string' && SAME_SITE_WORDS.has(sameSite.toLowerCase()))
  ) {
    throw optionError(
      'cookie.sameSite',
      `is ${shown(sameSite)}`,
      "Use 'lax', 'strict', 'none', 'auto', true or false.",
    );
  }
  if ((sameSiteNone(cookie) || sameSite === 'auto') && cookie.secure === false) {
    throw optionError(
      'cookie.sameSite',
      `is '${sameSite === 'auto' ? 'auto' : 'none'}' while cookie.secure is false; browsers drop a SameSite=None cookie without Secure`,
      "Use secure: true or 'auto', or sameSite: 'lax'.",
    );
  }
  if (cookie.partitioned === true && cookie.secure === false) {
    throw optionError(
      'cookie.partitioned',
      'is true while cookie.secure is false; browsers drop Partitioned cookies without Secure',
      "Use secure: true or 'auto', or drop partitioned.",
    );
  }
  checkNamePrefix(name, cookie);
  if (cookie.httpOnly === false)
    warnOnce('cookie.httpOnly is false: page scripts (and XSS) can read the session id.');
  return cookie;
}

/**
 * Why the session cookie of a login over plain HTTP would not stick, or undefined when it would:
 * express-session sends none with `secure: true`, and with `'auto'` it sends one without `Secure`,
 * which browsers drop for a `__Host-`/`__Secure-` name, `SameSite=None` or `Partitioned`.
 */
export function droppedOverHttp(
  name: string,
  cookie: KitCookieOptions,
): { why: string; fix: string } | undefined {
  if (cookie.secure === true) return { why: 'cookie.secure is true', fix: "use secure: 'auto'" };
  if (cookie.secure === false) return undefined;
  const prefix = namePrefix(name);
  if (prefix) {
    return {
      why: `the cookie name "${name}" starts with ${prefix}, which browsers keep only with Secure`,
      fix: 'use a name without the prefix',
    };
  }
  if (sameSiteNone(cookie)) {
    return {
      why: "cookie.sameSite is 'none', which browsers keep only with Secure",
      fix: "use sameSite: 'lax'",
    };
  }
  if (cookie.partitioned === true) {
    return {
      why: 'cookie.partitioned is true, which browsers keep only with Secure',
      fix: 'drop partitioned',
    };
  }
  return undefined;
}

/** The cookie name's prefix that browsers hold to extra rules, as browsers match it (any case). */
function namePrefix(name: string): '__Host-' | '__Secure-' | undefined {
  const lower = name.toLowerCase();
  if (lower.startsWith('__host-')) return '__Host-';
  if (lower.startsWith('__secure-')) return '__Secure-';
  return undefined;
}

/** The cookie library takes `sameSite` in any case (`'None'` from JavaScript callers). */
function sameSiteNone(cookie: KitCookieOptions): boolean {
  return typeof cookie.sameSite === 'string' && cookie.sameSite.toLowerCase() === 'none';
}

/**
 * Browsers drop a `__Secure-` cookie set without `Secure`, and a `__Host-` one that also has a
 * `Domain` or a `Path` other than `/` (RFC 6265bis 4.1.3): the session would silently never stick.
 * `secure: 'auto'` is accepted: on HTTPS it sets `Secure`.
 */
function checkNamePrefix(name: string, cookie: KitCookieOptions): void {
  const prefix = namePrefix(name);
  if (!prefix) return;
  const host = prefix === '__Host-';
  if (cookie.secure === false) {
    throw optionError(
      'cookie.secure',
      `is false while the name "${name}" starts with ${prefix}; browsers drop such cookies`,
      "Use secure: true (or 'auto' on HTTPS), or a name without the prefix.",
    );
  }
  if (host && cookie.domain !== undefined) {
    throw optionError(
      'cookie.domain',
      `is set while the name "${name}" starts with __Host-, which browsers accept only without Domain`,
      'Drop cookie.domain, or use a __Secure- name to share the cookie across subdomains.',
    );
  }
  if (host && cookie.path !== '/') {
    throw optionError(
      'cookie.path',
      `is ${JSON.stringify(cookie.path)} while the name "${name}" starts with __Host-, which needs path '/'`,
      "Use path: '/' or a name without the prefix.",
    );
  }
}

function resolveSecrets(secret: string | string[] | undefined): string[] {
  const production = process.env.NODE_ENV === 'production';
  const list = secret === undefined ? [] : Array.isArray(secret) ? secret : [secret];
  list.forEach((s, i) => {
    if (typeof s !== 'string' || s === '') {
      throw optionError(
        Array.isArray(secret) ? `secret[${i}]` : 'secret',
        'must be a non-empty string',
        "Generate one with: node -e \"console.log(require('crypto').randomBytes(32).toString('base64url'))\"",
      );
    }
  });
  const weak = list.some((s) => s.length < MIN_SECRET_LENGTH);
  if (production && (list.length === 0 || weak)) {
    throw optionRangeError(
      'secret',
      list.length === 0
        ? 'is required when NODE_ENV=production'
        : `must be at least ${MIN_SECRET_LENGTH} characters when NODE_ENV=production (each entry)`,
      "Set SESSION_SECRET to the output of: node -e \"console.log(require('crypto').randomBytes(32).toString('base64url'))\"",
    );
  }
  if (list.length === 0) {
    warnOnce(
      'no "secret" given: using a random per-process secret, so sessions end when the process restarts.',
    );
    return [randomBytes(32).toString('base64url')];
  }
  if (weak)
    warnOnce(`"secret" is shorter than ${MIN_SECRET_LENGTH} characters; production would refuse to start.`);
  return list;
}

function warnOnce(message: string): void {
  if (warnedAboutSecret) return;
  warnedAboutSecret = true;
  process.emitWarning(`express-redis-kit redisSession: ${message}`, { code: 'ERK_SESSION_INSECURE' });
}

/** For tests: lets the next insecure configuration warn again. */
export function resetSessionWarnings(): void {
  warnedAboutSecret = false;
}
