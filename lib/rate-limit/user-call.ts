import type { NextFunction } from 'express';
import { thrownError } from '../errors';

export const isThenable = (value: unknown): value is PromiseLike<unknown> =>
  typeof (value as PromiseLike<unknown> | null)?.then === 'function';

/**
 * Calls a user option (key, cost, skip) that may answer a value or a promise: a throw or rejection
 * goes to `next`, and a plain value continues synchronously, with no promise on the common path.
 * After an awaited value, a throw from the continuation (a header write after a timeout middleware
 * already answered, a throwing `handler`) also goes to `next`: Express only catches synchronous
 * throws, and an unhandled rejection would take the process down.
 */
export function callUser<T>(
  run: () => T | PromiseLike<T>,
  then: (value: T) => void,
  next: NextFunction,
): void {
  let value: T | PromiseLike<T>;
  try {
    value = run();
  } catch (error) {
    next(thrownError(error, 'rateLimit'));
    return;
  }
  if (!isThenable(value)) {
    then(value as T);
    return;
  }
  (value as PromiseLike<T>).then(
    (resolved) => {
      try {
        then(resolved);
      } catch (error) {
        next(thrownError(error, 'rateLimit'));
      }
    },
    (error: unknown) => next(thrownError(error, 'rateLimit')),
  );
}
