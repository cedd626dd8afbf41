import { MAX_TIMER_MS } from './duration';
import { checkKnownOptions, numberOptionError, optionError, shown } from './errors';

// The options of the helpers (pingRedis, closeRedis, subscribe), checked as the factories check
// theirs: a misspelt `{ timeout: 5 }` would otherwise quietly mean the default, and a `timeoutMs`
// of '5s' (an environment variable) a 1 ms timer, a health check that always fails.

/** The options of pingRedis and closeRedis. */
export const TIMEOUT_ONLY: ReadonlySet<string> = new Set(['timeoutMs']);

/**
 * A helper's options object: undefined is none (unless `required`); anything but an object, or an
 * unknown name, throws. `renamed`: hints for names users bring from elsewhere.
 */
export function helperOptions<T extends object>(
  options: T | undefined,
  known: ReadonlySet<string>,
  helper: string,
  { renamed = {}, required }: { renamed?: Readonly<Record<string, string>>; required?: string } = {},
): Partial<T> {
  if (options === undefined && !required) return {};
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw optionError('options', `of ${helper} must be an object; got ${shown(options)}`, required);
  }
  checkKnownOptions(options, known, helper, renamed);
  return options;
}

/** A helper's `timeoutMs`: a number of ms from `min`, default `fallback`. */
export function timeoutMsOption(value: unknown, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !(value >= min && value <= MAX_TIMER_MS)) {
    throw numberOptionError(
      'timeoutMs',
      value,
      `must be a number of ms from ${min} to ${MAX_TIMER_MS}; got ${shown(value)}`,
    );
  }
  return value;
}
