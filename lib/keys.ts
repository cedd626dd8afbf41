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

/**
 * Query parameters in a canonical order: by name, stable (repeats keep their order). Except where
 * the order of different names under one root changes what `qs` (Express 4's default parser, and
 * 'extended') builds: one name is a path inside another (`f` and `f[owner]`: `f=open&f[owner]=me` is
 * an array in request order; `a[b]` and `a[b][c]`), or a push form `[]` has a sibling under the same
 * parent (`a[]` beside `a[0]` or `a[c]`). Such a root's parameters are sorted by the root and keep
 * their request order among themselves. Every other query sorts by full name, as before
 * (`page[size]`, `page[number]`; `a[0]`, `a[1]`, which `qs` orders by index; `filter[x]` beside
 * `filter[y][z]`), so keys and fingerprints stored by earlier versions still match.
 */
export function sortQuery<T>(items: readonly T[], nameOf: (item: T) => string): T[] {
  const named = items.map((item) => {
    const name = nameOf(item);
    return { item, name, root: segmentsOf(name)[0]! };
  });
  const roots = new Map<string, Set<string>>();
  for (const { name, root } of named) roots.set(root, (roots.get(root) ?? new Set<string>()).add(name));
  const inOrder = new Set<string>();
  for (const [root, names] of roots) if (names.size > 1 && orderMatters([...names])) inOrder.add(root);
  const keyed = named.map(({ item, name, root }) => ({ item, key: inOrder.has(root) ? root : name }));
  keyed.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return keyed.map((k) => k.item);
}

/** `a[b][]` → `['a', '[b]', '[]']`, brackets encoded or not. */
function segmentsOf(name: string): string[] {
  return (
    name
      .replace(/%5B/gi, '[')
      .replace(/%5D/gi, ']')
      .match(/^[^[]*|\[[^\]]*\]/g) ?? [name]
  );
}

/** Whether these different names of one root build different values in different orders. */
function orderMatters(names: readonly string[]): boolean {
  const shapes = names.map(segmentsOf);
  for (const a of shapes) {
    for (const b of shapes) {
      if (a === b) continue;
      // One name is a path inside the other.
      if (a.length < b.length && a.every((segment, i) => segment === b[i])) return true;
      // A push form beside a sibling under the same parent.
      const push = a.indexOf('[]');
      if (
        push > 0 &&
        b.length > push &&
        b[push] !== '[]' &&
        a.slice(0, push).every((segment, i) => segment === b[i])
      )
        return true;
    }
  }
  return false;
}
