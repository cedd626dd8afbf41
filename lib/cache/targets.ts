import { shown } from '../errors';

/** What to invalidate: entries by tag and/or by the keys they were cached under. */
export interface InvalidateTarget {
  tags?: string[] | undefined;
  keys?: string[] | undefined;
}

/** An array holding only strings (tags, keys, method names). */
export function isStringList(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((t) => typeof t === 'string');
}

/**
 * The tags a `cacheResponse({ tags })` function returned. One string is one tag (`req => 'product:42'`
 * reads as that); anything else that is not a list of strings throws, so the response is not cached
 * (see fill.ts) rather than stored with tags no invalidation could match.
 */
export function tagsReturned(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  if (isStringList(value)) return value;
  throw new TypeError(
    `express-redis-kit: the tags option must return an array of strings; got ${shown(value)}.`,
  );
}

/**
 * Checks an `invalidate()` argument. A wrong shape (`invalidate('product:42')`, `{ tag: [...] }`)
 * must fail loudly: resolving would tell the caller the entries are gone while every one is still
 * served.
 */
export function checkInvalidateTarget(target: unknown): Required<InvalidateTarget> {
  const usage =
    "invalidate() takes { tags?: string[], keys?: string[] }, e.g. invalidate({ tags: ['product:42'] })";
  if (!target || typeof target !== 'object' || Array.isArray(target)) {
    throw new TypeError(`express-redis-kit: ${usage}; got ${shown(target)}.`);
  }
  const names = Object.keys(target);
  for (const name of names) {
    if (name !== 'tags' && name !== 'keys') {
      throw new TypeError(`express-redis-kit: ${usage}; "${name}" is not one of them.`);
    }
  }
  const given = target as InvalidateTarget;
  if (given.tags === undefined && given.keys === undefined) {
    // Read as "everything" by users of apicache.clear(); there is no such call here.
    throw new TypeError(
      `express-redis-kit: ${usage}; it names no tags or keys. To clear a whole cache, give every entry a shared tag (tags: () => ['all']) and invalidate({ tags: ['all'] }).`,
    );
  }
  const { tags = [], keys = [] } = given;
  if (!isStringList(tags)) throw new TypeError(`express-redis-kit: ${usage}; got tags ${shown(tags)}.`);
  if (!isStringList(keys)) throw new TypeError(`express-redis-kit: ${usage}; got keys ${shown(keys)}.`);
  return { tags, keys };
}

/**
 * What an `invalidates(select)` selector returned, as an invalidate() target: a list (or one string)
 * is tags, as the selector's signature `(req, res) => tags` reads; an object is checked as above.
 */
export function selectedTarget(selected: unknown): Required<InvalidateTarget> {
  if (typeof selected === 'string') return { tags: [selected], keys: [] };
  if (Array.isArray(selected)) return checkInvalidateTarget({ tags: selected });
  return checkInvalidateTarget(selected);
}
