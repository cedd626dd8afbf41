/**
 * A user's logger, wrapped so that its own failure (a closed transport, a throwing serializer) cannot
 * break the request it reports on: warnings run in fail paths and response events, where a throw
 * would hang the request or take the process down. The line is lost; the request is not.
 */
export function neverThrows<A extends unknown[]>(logger: {
  warn(...args: A): void;
}): {
  warn(...args: A): void;
} {
  const wrapper = {
    warn: (...args: A) => {
      try {
        logger.warn(...args);
      } catch {
        // Nowhere left to report it.
      }
    },
  };
  given.set(wrapper, logger);
  return wrapper;
}

const given = new WeakMap<object, object>();

/** The logger an option gave, behind the wrapper `neverThrows` made of it. */
export function givenLogger(wrapper: object): object | undefined {
  return given.get(wrapper);
}

/** Whether an option given as a logger has the `warn` method every component logs through. */
export function hasWarn(value: unknown): value is { warn(...args: never[]): void } {
  return typeof (value as { warn?: unknown } | null | undefined)?.warn === 'function';
}
