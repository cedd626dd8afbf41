import { withoutCommandArgs } from './redact';

/**
 * A user's logger, wrapped so that its own failure (a closed transport, a throwing serializer) cannot
 * break the request it reports on: warnings run in fail paths and response events, where a throw
 * would hang the request or take the process down (an async logger's rejection too). The line is
 * lost; the request is not. Errors in a line lose the Redis command arguments ioredis put on them.
 */
export function neverThrows<A extends unknown[]>(logger: {
  warn(...args: A): void;
}): {
  warn(...args: A): void;
} {
  const wrapper = {
    warn: (...args: A) => {
      try {
        for (const arg of args)
          withoutCommandArgs(typeof arg === 'object' && arg && 'err' in arg ? arg.err : arg);
        const done: unknown = logger.warn(...args);
        // An async logger's failure is a rejection: unhandled, it would end the process.
        if (typeof (done as PromiseLike<unknown> | undefined)?.then === 'function') {
          (done as PromiseLike<unknown>).then(undefined, () => {});
        }
      } catch {
        // Nowhere left to report it.
      }
    },
  };
  Object.defineProperty(wrapper, GIVEN, { value: logger });
  return wrapper;
}

// Symbol.for: another copy of the kit (see version.ts) reads it too, e.g. to compare a logger given
// to cacheResponse with the one its createCache() was given.
const GIVEN = Symbol.for('express-redis-kit.givenLogger');

/** The logger an option gave, behind the wrapper `neverThrows` made of it. */
export function givenLogger(wrapper: object): object | undefined {
  return (wrapper as Record<symbol, object | undefined>)[GIVEN];
}

/** Whether an option given as a logger has the `warn` method every component logs through. */
export function hasWarn(value: unknown): value is { warn(...args: never[]): void } {
  return typeof (value as { warn?: unknown } | null | undefined)?.warn === 'function';
}

const warnedCodes = new Set<string>();

/**
 * `process.emitWarning` once per process for `code`: a setup mistake is worth one line, not one per
 * request. `message` is built only when it is emitted.
 */
export function emitWarningOnce(code: string, message: () => string): void {
  if (warnedCodes.has(code)) return;
  warnedCodes.add(code);
  process.emitWarning(message(), { code });
}

/** For tests: lets these codes warn again. */
export function forgetWarnings(...codes: string[]): void {
  for (const code of codes) warnedCodes.delete(code);
}
