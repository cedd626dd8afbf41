import { randomBytes } from 'node:crypto';
import { optionError, optionRangeError } from '../errors';
import { warnOnce } from './warnings';

/** Shortest secret production accepts. */
export const MIN_SECRET_LENGTH = 32;

/**
 * The `secret` option as the list express-session rotates through (the first signs). Required, and
 * long, under NODE_ENV=production; elsewhere a missing one becomes a random per-process secret.
 */
export function resolveSecrets(secret: string | string[] | undefined): string[] {
  const production = process.env.NODE_ENV === 'production';
  const list = secret === undefined ? [] : Array.isArray(secret) ? secret : [secret];
  list.forEach((s, i) => {
    if (typeof s !== 'string' || s === '') {
      throw optionError(
        Array.isArray(secret) ? `secret[${i}]` : 'secret',
        'must be a non-empty string',
        "Generate one with: node -e \"console.log(require('crypto').randomBytes(32).toString('base64url'))\"",
      );
    }
  });
  const weak = list.some((s) => s.length < MIN_SECRET_LENGTH);
  if (production && (list.length === 0 || weak)) {
    // Missing is a TypeError, as every other required option; too short a RangeError.
    throw (list.length === 0 ? optionError : optionRangeError)(
      'secret',
      list.length === 0
        ? 'is required when NODE_ENV=production'
        : `must be at least ${MIN_SECRET_LENGTH} characters when NODE_ENV=production (each entry)`,
      "Set SESSION_SECRET to the output of: node -e \"console.log(require('crypto').randomBytes(32).toString('base64url'))\"",
    );
  }
  if (list.length === 0) {
    warnOnce(
      'no "secret" given: using a random per-process secret, so sessions end when the process restarts.',
    );
    return [randomBytes(32).toString('base64url')];
  }
  if (weak)
    warnOnce(`"secret" is shorter than ${MIN_SECRET_LENGTH} characters; production would refuse to start.`);
  return list;
}
