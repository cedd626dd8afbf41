let warnedAboutSecret = false;

/** One warning per process about an insecure configuration (the first one found). */
export function warnOnce(message: string): void {
  if (warnedAboutSecret) return;
  warnedAboutSecret = true;
  process.emitWarning(`express-redis-kit redisSession: ${message}`, { code: 'ERK_SESSION_INSECURE' });
}

let warnedSharedIndex = false;

/** One warning per process about two session systems sharing a user index (see index.ts). */
export function warnSharedIndexOnce(message: string): void {
  if (warnedSharedIndex) return;
  warnedSharedIndex = true;
  process.emitWarning(`express-redis-kit redisSession: ${message}`, { code: 'ERK_SESSION_SHARED_INDEX' });
}

/** For tests: lets the next insecure configuration, or shared index, warn again. */
export function resetSessionWarnings(): void {
  warnedAboutSecret = false;
  warnedSharedIndex = false;
}
