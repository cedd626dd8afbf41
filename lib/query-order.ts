import { isDeepStrictEqual } from 'node:util';
import { parse } from 'qs';

/**
 * How many `&`-separated parts query parsers read (`qs`'s parameterLimit, `querystring`'s maxKeys):
 * they drop the rest, so which parameters an app sees depends on their order, and on empty parts.
 */
export const QUERY_PARSER_LIMIT = 1000;

/**
 * Query parameters in a canonical order: by name, stable (repeats keep their order). Except where
 * the order of different names under one root changes what `qs` (Express 4's default parser, and
 * 'extended') builds: one name is a path inside another (`f` and `f[owner]`: `f=open&f[owner]=me` is
 * an array in request order; `a[b]` and `a[b][c]`), or a push form `[]` has a sibling under the same
 * parent (`a[]` beside `a[0]` or `a[c]`). Such a root's parameters are sorted by the root and keep
 * their request order among themselves. Every other query sorts by full name, as before
 * (`page[size]`, `page[number]`; `a[0]`, `a[1]`, which `qs` orders by index; `filter[x]` beside
 * `filter[y][z]`), so keys and fingerprints stored by earlier versions still match.
 *
 * What these rules do not model (`qs` reads a leading `[a]` as the root `a` and drops text after a
 * bracket: `a[b]c` is `a[b]`) is caught by asking `qs` itself: when it builds the sorted query into
 * another value than the query as sent, the query keeps its request order. `textOf` gives an item
 * as `name=value`, as sent; without it (a caller that tells such queries apart otherwise), no check.
 * A query of more than MAX_BRACKETED bracketed names, or with one and more than MAX_CHECKED parts,
 * keeps its request order; callers keep one of more than QUERY_PARSER_LIMIT parts as sent.
 */
export function sortQuery<T>(
  items: readonly T[],
  nameOf: (item: T) => string,
  textOf: ((item: T) => string) | undefined,
): T[] {
  let bracketed = 0;
  for (const item of items) if (BRACKET.test(nameOf(item)) && ++bracketed > MAX_BRACKETED) return [...items];
  if (bracketed > 0 && items.length > MAX_CHECKED) return [...items];
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
  const sorted = keyed.map((k) => k.item);
  // Without brackets, qs builds plain names and arrays of repeats, which a stable sort keeps.
  if (!textOf || !named.some(({ name }) => BRACKET.test(name))) return sorted;
  const asQs = (list: readonly T[]) => parse(list.map(textOf).join('&'), QS_AS_EXPRESS);
  return isDeepStrictEqual(asQs(sorted), asQs(items)) ? sorted : [...items];
}

const BRACKET = /\[|%5B/i;
/**
 * Past this many bracketed names, a query keeps its request order: the checks cost more than the
 * order is worth (they compare a root's names pairwise, and `qs` parses the query twice), and a
 * client could make every lookup pay for them. Request order can only split keys, never merge them.
 */
const MAX_BRACKETED = 64;
/** Likewise for a query with any bracketed name and more parts than this: `qs` would parse it all twice. */
const MAX_CHECKED = 256;
/** Express 4's 'extended' query parser: `qs.parse(query, { allowPrototypes: true })`. */
const QS_AS_EXPRESS = { allowPrototypes: true } as const;

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
