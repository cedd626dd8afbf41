import ms from 'ms';
import { shown } from './errors';

/** A duration: milliseconds as a number, or an `ms`-style string such as `'500ms'`, `'5m'`, `'1d'`. */
export type Duration = number | string;

export interface DurationRules {
  /** Smallest accepted value in ms (inclusive). Default 1. */
  min?: number;
  /** Accept 0 even though it is below `min` (e.g. "disabled"). Default false. */
  allowZero?: boolean;
  /** Largest accepted value in ms (inclusive). Default {@link MAX_DURATION_MS}. */
  max?: number;
}

/**
 * Longest duration any option takes: 100 years. Far beyond any useful ttl, and it keeps every value
 * (and their sums) a plain integer for Redis: `1e21` would reach it as the string "1e+21" and fail
 * every request instead of the construction.
 */
export const MAX_DURATION_MS = 100 * 365.25 * 24 * 3600 * 1000;

/**
 * Longest delay Node timers honour: `setTimeout` fires after 1 ms for anything longer, so a duration
 * that becomes a timer must stay at or below it.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Parses and validates a duration option once, at construction.
 * Throws a TypeError/RangeError that names the option, the bad value and the fix.
 */
export function toMs(value: Duration, option: string, rules: DurationRules = {}): number {
  const { min = 1, allowZero = false, max = MAX_DURATION_MS } = rules;
  let out: number | undefined;
  if (typeof value === 'number') out = value;
  else if (typeof value === 'string' && value.trim() !== '') {
    const trimmed = value.trim();
    out = /^\d+(\.\d+)?$/.test(trimmed) ? Number(trimmed) : ms(trimmed as ms.StringValue);
  }
  if (out === undefined || typeof out !== 'number' || !Number.isFinite(out)) {
    throw new TypeError(
      `express-redis-kit: option "${option}" must be a number of milliseconds or a duration string like '500ms', '5m' or '1h'; got ${shown(value)}.`,
    );
  }
  if (allowZero && out === 0) return 0;
  if (out < min) {
    throw new RangeError(
      `express-redis-kit: option "${option}" must be at least ${min} ms${allowZero ? ' (or 0 to disable)' : ''}; got ${shown(value)}.`,
    );
  }
  if (out > max) {
    const why =
      max === MAX_TIMER_MS
        ? ' (about 24.8 days, the longest Node timer)'
        : max === MAX_DURATION_MS
          ? ' (100 years)'
          : '';
    throw new RangeError(
      `express-redis-kit: option "${option}" must be at most ${max} ms${why}; got ${shown(value)}.`,
    );
  }
  return Math.round(out);
}
