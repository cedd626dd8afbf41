import { randomBytes } from 'node:crypto';

// Tokens must be unique, not secret: none leaves the app but to Redis, where it tells one holder's
// writes from another's. A random base per process keeps processes (and restarts) apart; a counter
// keeps this process's tokens apart. A fresh random draw per token was a synchronous OpenSSL call
// (about 8 µs) on every session read and every cache lookup.
const base = randomBytes(12).toString('base64url');
let sequence = 0;

/** A unique owner token for a lock, lease or claim: tells the holder's own writes from anyone else's. */
export function newToken(): string {
  sequence += 1;
  return `${base}.${sequence.toString(36)}`;
}
