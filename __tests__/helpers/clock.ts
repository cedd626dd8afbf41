/**
 * Steps the wall clock back, as NTP may: from now on `Date.now()` reads `ms` earlier than the real
 * time, and keeps running. Returns what puts the real clock back.
 */
export function stepWallClockBack(ms = 60_000): () => void {
  const realNow = Date.now;
  const stepped = realNow() - ms;
  const startedReal = realNow();
  Date.now = () => stepped + (realNow() - startedReal);
  return () => {
    Date.now = realNow;
  };
}
