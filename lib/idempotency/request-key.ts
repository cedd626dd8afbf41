import type { Request } from 'express';
import { createIpGrouper } from '../ip';
import { hashPart, scopePart, taggedKey } from '../keys';
import type { ScopeValue } from './options';

// 1–255 visible ASCII characters (0x21–0x7E): no spaces, no control characters, no commas that
// would hide a repeated header.
const VALID_KEY = /^[\x21-\x2b\x2d-\x7e]{1,255}$/;

/** The idempotency key of a request, or why there is none. */
export type ParsedKey = { ok: true; key: string } | { ok: false; reason: 'missing' | 'malformed' };

// RFC 8941: an sf-string (§3.3.3) and the parameters any Item may carry (§3.1.2), none of which the
// draft defines (they are ignored, as the RFC asks of unknown ones).
const SF_CHAR = String.raw`(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])`;
const BARE_ITEM = String.raw`(?:-?\d{1,15}(?:\.\d{1,3})?|"${SF_CHAR}*"|[A-Za-z*][!#$%&'*+\-.^_\x60|~0-9A-Za-z:/]*|:[A-Za-z0-9+/=]*:|\?[01])`;
const SF_STRING_ITEM = new RegExp(`^"(${SF_CHAR}*)"(?:; *[a-z*][a-z0-9_.*-]*(?:=${BARE_ITEM})?)*$`);

/**
 * Reads the key header. The IETF draft sends the key as a structured-field string
 * (`Idempotency-Key: "abc"`, escapes and parameters as RFC 8941 has them) while Stripe and most
 * clients send it bare (`Idempotency-Key: abc`); both name the same key.
 */
export function parseKey(raw: string | string[] | undefined): ParsedKey {
  if (raw === undefined) return { ok: false, reason: 'missing' };
  // Node joins repeated headers it does not know; a repeated key is ambiguous, so it is rejected.
  if (Array.isArray(raw)) return { ok: false, reason: 'malformed' };
  let key = raw;
  if (key.startsWith('"')) {
    // A quote opens an sf-string: it must be one, or the key would depend on how it is misread.
    const item = SF_STRING_ITEM.exec(key);
    if (!item) return { ok: false, reason: 'malformed' };
    key = (item[1] as string).replace(/\\(["\\])/g, '$1');
  }
  return VALID_KEY.test(key) ? { ok: true, key } : { ok: false, reason: 'malformed' };
}

/**
 * The key space a request belongs to, tagged by where it came from so a user id never equals an IP;
 * undefined when nothing tells this caller from any other (no `scope` answer and no address).
 */
export async function resolveScope(
  req: Request,
  scope: ((req: Request) => ScopeValue | Promise<ScopeValue>) | undefined,
): Promise<string | undefined> {
  if (scope) {
    const value = scopePart(await scope(req), 'idempotency');
    if (value !== undefined) return `s:${value}`;
  }
  // No address: the client hung up before this ran (Node reads it from the open socket), or the app
  // listens on a Unix socket and "trust proxy" does not trust the proxy in front. One shared "ip:"
  // space would replay one caller's answer to another, and let a retry run the handler again.
  const ip = req.ip || req.socket?.remoteAddress;
  return ip ? `ip:${clientAddress(ip)}` : undefined;
}

/**
 * One spelling per client address: a retry may reach an instance on a dual-stack listener
 * (`::ffff:203.0.113.7`) or through a proxy that adds the connection's port to X-Forwarded-For.
 */
export const clientAddress = createIpGrouper(false);

/**
 * The route part of the namespace: the route pattern when mounted on a route, else the path as the
 * app's router matches it (`/Orders` and `/orders/` reach the same handler unless the app turned on
 * case-sensitive or strict routing, so they must be one namespace, not three).
 */
export function routeOf(req: Request): string {
  const pattern = (req.route as { path?: unknown } | undefined)?.path;
  if (pattern === undefined) return matchedPath(req);
  // The mount path as the client spelled it (`/API` reaches the router mounted at `/api`): as the
  // router matches it, so that another spelling is the same namespace, not a second run.
  let base = req.baseUrl ?? '';
  if (!caseSensitive(req)) base = base.toLowerCase();
  return `${base}${String(pattern)}`;
}

const caseSensitive = (req: Request): boolean =>
  Boolean((req.app as { get?: (setting: string) => unknown } | undefined)?.get?.('case sensitive routing'));

/**
 * The request path as the app's router matches it: lower-cased unless `case sensitive routing` is on,
 * without a trailing slash unless `strict routing` is on.
 */
export function matchedPath(req: Request): string {
  let path = `${req.baseUrl ?? ''}${req.path ?? ''}`;
  const app = req.app as { get?: (setting: string) => unknown } | undefined;
  if (!caseSensitive(req)) path = path.toLowerCase();
  if (!app?.get?.('strict routing') && path.length > 1 && path.endsWith('/')) path = path.slice(0, -1);
  return path;
}

/**
 * The Redis key of one record. Scope, method, route and key are hashed together, so a key can
 * never cross scopes or routes, and user input never shapes the key (or its hash slot).
 */
export function recordKey(prefix: string, scope: string, method: string, route: string, key: string): string {
  return taggedKey(prefix, 'idem', hashPart(JSON.stringify([scope, method.toUpperCase(), route, key])));
}
