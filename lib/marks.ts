import { emitWarningOnce } from './logger';

/**
 * Marks the kit leaves on a request or response for its other middlewares. Under `Symbol.for` keys:
 * another copy of the kit in the process (its CJS and ESM builds, version.ts) must see them too.
 */
export function mark<T>(name: string) {
  const key = Symbol.for(`express-redis-kit.${name}`);
  return {
    get: (on: object): T | undefined => (on as Record<symbol, T | undefined>)[key],
    set: (on: object, value: T): void => {
      (on as Record<symbol, T>)[key] = value;
    },
  };
}

export type Mark<T> = ReturnType<typeof mark<T>>;

/**
 * Whether this is the first pass of `req` through a middleware of `kind` for `key`, and notes it.
 * One mounted twice on a request's path (on the app and again on the route), or two alike, would
 * otherwise meet their own work: the second pass lets the request on.
 */
export function firstPass(kind: Mark<Set<string>>, req: object, key: string): boolean {
  const seen = kind.get(req);
  if (seen?.has(key)) return false;
  if (seen) seen.add(key);
  else kind.set(req, new Set([key]));
  return true;
}

/** The second pass's warning (once per `code`): which middleware, and what it met twice. */
export function warnPassedTwice(code: string, middleware: string, what: string): void {
  emitWarningOnce(
    code,
    () =>
      `express-redis-kit ${middleware}: one request reached ${middleware} twice for the same ${what} (mounted on the app and again on a router or route?); the second pass lets it on. Mount it once. (Warned once.)`,
  );
}
