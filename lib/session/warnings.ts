import { emitWarningOnce, forgetWarnings } from '../logger';

const INSECURE = 'ERK_SESSION_INSECURE';
const SHARED_INDEX = 'ERK_SESSION_SHARED_INDEX';

/** One warning per process about an insecure configuration (the first one found). */
export function warnOnce(message: string): void {
  emitWarningOnce(INSECURE, () => `express-redis-kit redisSession: ${message}`);
}

/** One warning per process about two session systems sharing a user index (see shared-index.ts). */
export function warnSharedIndexOnce(message: string): void {
  emitWarningOnce(SHARED_INDEX, () => `express-redis-kit redisSession: ${message}`);
}

/** For tests: lets the next insecure configuration, or shared index, warn again. */
export function resetSessionWarnings(): void {
  forgetWarnings(INSECURE, SHARED_INDEX);
}
