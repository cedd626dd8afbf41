/**
 * Rate-limit headers (`RateLimit`, `RateLimit-Policy`, `RateLimit-Remaining`…, `X-RateLimit-*`) of
 * the kit's limiter or a peer's. They describe the quota of the client whose request ran, at that
 * moment: a cached or replayed answer must not carry them to another request. A limiter in front sets
 * its own on every request; one behind the cache or idempotency() did not run for the hit or replay.
 */
export function isQuotaHeader(name: string): boolean {
  return /^(x-)?ratelimit(-|$)/.test(name);
}
