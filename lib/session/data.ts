import type { Request } from 'express';
import type { SessionData } from 'express-session';

// What a session is to the store: its data, its own lifetime, its stored form and its owner.

/**
 * The session was ended (logout, logoutAll, a login elsewhere in the browser) while this request ran:
 * without `req.session` express-session sends no cookie, so the answer cannot put the dead session's
 * cookie back over the one the logout cleared or the login set.
 */
export function forgetInRequest(session: SessionData): void {
  const req = (session as { req?: Request }).req;
  if (req && req.session === session) (req as { session?: unknown }).session = undefined;
}

/** The stored JSON as session data, or `undefined` when it is not shaped like one (a corrupt value). */
export function parseSession(data: string): SessionData | undefined {
  try {
    const parsed: unknown = JSON.parse(data);
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return undefined;
    const cookie = (parsed as { cookie?: unknown }).cookie;
    if (!cookie || typeof cookie !== 'object' || Array.isArray(cookie)) return undefined;
    // express-session's Cookie throws on other types (in touch(), after its end() began: a hang).
    // `false` is what it stores for `cookie.expires = false` (a cookie that ends with the browser).
    const { originalMaxAge, expires } = cookie as { originalMaxAge?: unknown; expires?: unknown };
    if (originalMaxAge != null && originalMaxAge !== false && typeof originalMaxAge !== 'number')
      return undefined;
    if (
      expires != null &&
      expires !== false &&
      (typeof expires !== 'string' || Number.isNaN(Date.parse(expires)))
    )
      return undefined;
    return parsed as SessionData;
  } catch {
    return undefined;
  }
}

/** The user id a session is indexed under, or '' for an anonymous one. */
export function userIdOf(session: SessionData): string {
  const userId = (session as { userId?: unknown }).userId;
  return typeof userId === 'string' || typeof userId === 'number' ? String(userId) : '';
}

/**
 * What decides whether a session must be written: its own data and its lifetime (the cookie's
 * `originalMaxAge`, which a handler sets for "remember me"), but not the cookie's expiry, which
 * moves on every touch. Without the lifetime, a `maxAge` set after `login()` (or on a loaded
 * session) would reach the browser but never Redis, and the session would die at the store's ttl.
 */
export interface Shape {
  /** {@link bodyOf}: the data without the cookie. */
  body: string;
  /** {@link lifetimeOf}. */
  lifetime: unknown;
}

export function shapeOf(session: SessionData): Shape {
  return { body: bodyOf(session), lifetime: lifetimeOf(session) };
}

/** Whether the session still has `shape` (lifetimes a clock tick apart count as the same). */
export function hasShape(session: SessionData, shape: Shape): boolean {
  return shape.body === bodyOf(session) && sameLifetime(shape.lifetime, lifetimeOf(session));
}

/** The session's own lifetime: the cookie's `originalMaxAge` (ms), or null for a browser-session cookie. */
export function lifetimeOf(session: SessionData): unknown {
  return session.cookie?.originalMaxAge;
}

/**
 * express-session's `touch()` recomputes `originalMaxAge` from two clock reads, so it comes out a
 * millisecond short whenever the clock ticks between them. That is noise, not a new lifetime: it
 * must not cost a write (or a second round trip on the next read).
 */
export function sameLifetime(a: unknown, b: unknown): boolean {
  if (typeof a === 'number' && typeof b === 'number') return Math.abs(a - b) < 1000;
  return a === b;
}

/** The session's data without its cookie: what express-session compares to decide it was modified. */
export function bodyOf(session: SessionData): string {
  const { cookie: _cookie, ...data } = session;
  return JSON.stringify(data);
}

/**
 * The session's own lifetime, not the cookie's time left: every write goes with a cookie sent
 * afresh (touched), and a remaining time that drifts by a millisecond would no longer match the
 * lifetime on the next read, costing that request a second round trip. `defaultMs`: the store's ttl.
 */
export function ttlOf(session: SessionData, defaultMs: number): number {
  const own = lifetimeOf(session);
  return typeof own === 'number' && own > 0 ? Math.ceil(own) : defaultMs;
}

/**
 * A handler set `cookie.maxAge` to 0 or less: the browser drops the cookie it gets, so the session
 * ends here too, as connect-redis does; kept for the store's ttl, a copy of that cookie would
 * still open it.
 */
export function endsNow(session: SessionData): boolean {
  const lifetime = lifetimeOf(session);
  return typeof lifetime === 'number' && lifetime <= 0;
}
