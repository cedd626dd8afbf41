import { shown } from '../errors';

/** Session fields express-session uses itself: login() data may not set them. */
const RESERVED = new Set([
  'cookie',
  'id',
  'req',
  'regenerate',
  'destroy',
  'reload',
  'save',
  'touch',
  'resetMaxAge',
]);

// A lone UTF-16 surrogate: Redis stores text as UTF-8, where it becomes U+FFFD, so 'bob\uDFFF' and
// 'bob\uFFFD' would share one index, and neither would match what list() reads back.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** A user id the index can keep apart from every other, as its text; else a TypeError. */
export function checkUserId(userId: unknown): string {
  const ok =
    (typeof userId === 'string' && userId !== '' && !LONE_SURROGATE.test(userId)) ||
    (typeof userId === 'number' && Number.isFinite(userId));
  if (!ok) {
    throw new TypeError(
      `express-redis-kit: userId must be a non-empty string of well-formed text, or a finite number; got ${shown(userId)}.`,
    );
  }
  return String(userId);
}

/** login()'s data: an object with a valid userId and none of express-session's own fields. */
export function checkLoginData(data: unknown): void {
  if (!data || typeof data !== 'object') {
    throw new TypeError("express-redis-kit: sessions.login(req, data) needs data like { userId: '42' }.");
  }
  checkUserId((data as { userId?: unknown }).userId);
  for (const key of Object.keys(data)) {
    if (key === '__proto__') {
      // An own "__proto__" (JSON.parse makes one, and spreading a request body keeps it) would
      // replace the session's prototype on assignment, not be stored.
      throw new TypeError('express-redis-kit: sessions.login() data may not set "__proto__".');
    }
    if (RESERVED.has(key)) {
      throw new TypeError(
        `express-redis-kit: sessions.login() data may not set "${key}" (express-session uses it).`,
      );
    }
  }
}
