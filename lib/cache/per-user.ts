import type { IncomingHttpHeaders } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { optionError } from '../errors';
import { kitSessionCookies } from '../session-cookies';
import type { CACHE_DEFAULTS } from './options';
import type { CacheResponseOptions } from './types';

/**
 * Which requests are per-user, and so never answered from (or stored in) a shared entry without
 * `scope`/`key`: those carrying `Authorization`, a session cookie or a credential header. Safe by
 * default: a per-user request missed here means one user's response served to another.
 */
export interface PerUserRules {
  /** Cookie name → whether it marks the request as per-user; undefined: no cookie does. */
  sessionCookie: ((name: string) => boolean) | undefined;
  /** Lower-case request header name → whether it marks the request as per-user. */
  credentialHeader: ((name: string) => boolean) | undefined;
}

export type PerUserReason = 'authorization' | 'session' | 'credentials' | 'client-certificate';

/**
 * Validates `sessionCookie` and `credentialHeaders`; throws a TypeError naming the option. `defaults`:
 * the rules used when an option is not given (passed in, so defaults stay in options.ts).
 */
export function resolvePerUserRules(
  options: CacheResponseOptions,
  defaults: Pick<typeof CACHE_DEFAULTS, 'sessionCookie' | 'credentialHeader' | 'notCredentialHeader'>,
): PerUserRules {
  const { sessionCookie, credentialHeader, notCredentialHeader } = defaults;
  const rule = namePredicate(options.sessionCookie, 'sessionCookie', 'cookie', false, (name) =>
    sessionCookie.test(name),
  );
  // The kit's own session cookies count whatever the rule (read when a request comes: a
  // redisSession() may be made after the cache); `false` alone says that no cookie does.
  const kitCookies = kitSessionCookies();
  const headerRule = namePredicate(
    options.credentialHeaders,
    'credentialHeaders',
    'header',
    // Node hands header names over in lower case, whatever case the option is written in.
    true,
    (name) => credentialHeader.test(name),
  );
  const named = Array.isArray(options.credentialHeaders)
    ? options.credentialHeaders.find((name) => notCredentialHeader.test(name.toLowerCase()))
    : undefined;
  if (named !== undefined) {
    throw optionError(
      'credentialHeaders',
      `cannot name ${JSON.stringify(named)}: browsers send Sec-* headers (Sec-Fetch-User with every page load), HTTP/2 pseudo-headers come with every request, and Vercel's OIDC token is the deployment's, so none of them tells users apart`,
      'Leave it out.',
    );
  }
  return {
    sessionCookie: rule && ((name) => rule(name) || kitCookies.has(name)),
    // Also under a RegExp the app gives: /user$/ must not make every page load per-user.
    credentialHeader: headerRule && ((name) => headerRule(name) && !notCredentialHeader.test(name)),
  };
}

/** Why the request counts as per-user, or undefined when it does not. */
export function perUserReason(headers: IncomingHttpHeaders, rules: PerUserRules): PerUserReason | undefined {
  if (headers.authorization !== undefined) return 'authorization';
  if (rules.sessionCookie && hasSessionCookie(headers, rules.sessionCookie)) return 'session';
  if (rules.credentialHeader) {
    for (const name in headers) if (rules.credentialHeader(name)) return 'credentials';
  }
  return undefined;
}

/**
 * Whether the connection itself carries an identity: a TLS client certificate, on an app that
 * terminates TLS itself (`https.createServer({ requestCert: true })`). No header says so; behind a
 * proxy doing mTLS, its headers do (`X-Forwarded-Client-Cert`…, see `credentialHeaders`).
 */
export function hasClientCertificate(socket: unknown): boolean {
  const tls = socket as Partial<TLSSocket> | undefined;
  if (!tls?.encrypted || typeof tls.getPeerCertificate !== 'function') return false;
  const cert = tls.getPeerCertificate();
  return cert !== null && typeof cert === 'object' && Object.keys(cert).length > 0;
}

/** An option naming cookies or headers (a RegExp, a list of names, or false) as a predicate. */
function namePredicate(
  option: RegExp | string[] | false | undefined,
  optionName: string,
  what: 'cookie' | 'header',
  caseless: boolean,
  fallback: (name: string) => boolean,
): ((name: string) => boolean) | undefined {
  if (option === false) return undefined;
  if (option === undefined) return fallback;
  if (option instanceof RegExp) {
    const pattern = stateless(option, caseless);
    return (name) => pattern.test(name);
  }
  if (Array.isArray(option) && option.every((n) => typeof n === 'string')) {
    const names = new Set(caseless ? option.map((n) => n.toLowerCase()) : option);
    return (name) => names.has(name);
  }
  throw optionError(optionName, `must be a RegExp, an array of ${what} names, or false`);
}

/**
 * A RegExp without `g`/`y`, whose `lastIndex` would make every other `test()` of one name fail;
 * `caseless` adds `i`.
 */
function stateless(pattern: RegExp, caseless: boolean): RegExp {
  const flags = pattern.flags.replace(/[gy]/g, '') + (caseless && !pattern.ignoreCase ? 'i' : '');
  return flags === pattern.flags ? pattern : new RegExp(pattern.source, flags);
}

/** Cookies (by name) a request carries that mark it as part of a session. */
function hasSessionCookie(headers: IncomingHttpHeaders, isSession: (name: string) => boolean): boolean {
  const cookie = headers.cookie;
  if (!cookie) return false;
  for (const part of cookie.split(';')) {
    const eq = part.indexOf('=');
    const name = (eq === -1 ? part : part.slice(0, eq)).trim();
    if (name && isSession(name)) return true;
  }
  return false;
}
