import { createHash } from 'node:crypto';
import { shown } from './errors';

/** Prefix of every key the kit writes, unless a middleware's `prefix` option says otherwise. */
export const DEFAULT_PREFIX = 'erk:';

const SAFE_PART = /^[A-Za-z0-9_.:@\-/=+]{1,64}$/;

/** A short, non-reversible, key-safe digest (SHA-256, base64url, 128 bits). */
export function hashPart(value: string | Buffer): string {
  return createHash('sha256').update(value).digest('base64url').slice(0, 22);
}

/**
 * Makes a user-supplied value safe inside a key: short plain values stay readable; long ones, and
 * ones holding braces (which would move the hash tag) or other odd bytes, become a digest.
 */
export function safePart(value: string): string {
  return SAFE_PART.test(value) ? value : `#${hashPart(value)}`;
}

/**
 * Builds `<prefix><kind>:{<id>}[:<suffix>...]`. Every key of one operation is built with the same
 * `id`, so all of them share the `{hash tag}` and land in one Redis Cluster slot.
 */
export function taggedKey(prefix: string, kind: string, id: string, ...suffix: string[]): string {
  let key = `${prefix}${kind}:{${safePart(id)}}`;
  for (const part of suffix) key += `:${part}`;
  return key;
}

/** Validates a `prefix` option: a string without braces (they would break hash tags). */
export function checkPrefix(prefix: unknown, option = 'prefix'): string {
  if (typeof prefix !== 'string' || /[{}]/.test(prefix)) {
    throw new TypeError(
      `express-redis-kit: option "${option}" must be a string without "{" or "}" (they would change the Redis Cluster hash slot); got ${shown(prefix)}.`,
    );
  }
  return prefix;
}

/**
 * What a `scope` callback answered, as a key part: undefined when it is empty (`undefined`, `null`,
 * `''`), the text of a string or a finite number, and a TypeError naming the option otherwise. An
 * object (`req => req.user`) would otherwise become "[object Object]" for every user, who would then
 * share one key space.
 */
export function scopePart(value: unknown, component: string): string | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value === 'string' || typeof value === 'bigint') return String(value);
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  throw new TypeError(
    `express-redis-kit ${component}: option "scope" must return a string or a number (e.g. req => req.user?.id), or undefined for none; got ${shown(value)}.`,
  );
}
