import { numberOptionError, shown } from './errors';

/**
 * The largest `maxBodySize`. Redis refuses a single value over 512 MB (its default
 * `proto-max-bulk-len`) as a protocol error and closes the connection, which every middleware on the
 * client shares; 1 MiB is left for what is stored beside the body (status, headers).
 */
export const MAX_BODY_SIZE = 511 * 1024 * 1024;

/** Validates a `maxBodySize` option: whole bytes, from 0 to {@link MAX_BODY_SIZE}. */
export function checkMaxBodySize(value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_BODY_SIZE) {
    throw numberOptionError(
      'maxBodySize',
      value,
      `must be a whole number of bytes from 0 to ${MAX_BODY_SIZE} (511 MiB: Redis refuses a value over 512 MB and drops the connection); got ${shown(value)}`,
    );
  }
  return value;
}
