import { randomBytes } from 'node:crypto';

/** A random owner token for a lock, lease or claim: tells the holder's own writes from anyone else's. */
export function newToken(): string {
  return randomBytes(12).toString('base64url');
}
