let warnedAboutSecret = false;

/** One warning per process about an insecure configuration (the first one found). */
export function warnOnce(message: string): void {
  if (warnedAboutSecret) return;
  warnedAboutSecret = true;
  process.emitWarning(`express-redis-kit redisSession: ${message}`, { code: 'ERK_SESSION_INSECURE' });
}

/** For tests: lets the next insecure configuration warn again. */
export function resetSessionWarnings(): void {
  warnedAboutSecret = false;
}
