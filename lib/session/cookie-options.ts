import type { CookieOptions } from 'express-session';
import { checkKnownOptions, optionError, shown } from '../errors';
import { warnOnce } from './warnings';

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

/** The cookie settings express-session applies, less the lifetime (from `ttl`). */
const COOKIE_KNOWN = new Set(['domain', 'path', 'httpOnly', 'secure', 'sameSite', 'partitioned', 'priority']);

const COOKIE_RENAMED: Record<string, string> = {
  signed: 'the session cookie is always signed with "secret"',
  encode: 'express-session ignores it: the cookie value is always the signed session id',
  name: 'use the top-level "name" option',
};

export function resolveCookie(
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
