import type { RequestHandler } from 'express';
import { createLimiter } from './limiter';
import { resolveOptions } from './options';
import type { RateLimitOptions, RateLimitState } from './types';

export type {
  Algorithm,
  DeniedInfo,
  HeadersMode,
  PolicyState,
  RateLimitInfo,
  RateLimitOptions,
  RateLimitPolicy,
  RateLimitState,
} from './types';

/** The middleware `rateLimit()` returns, with its admin API. */
export interface RateLimitMiddleware extends RequestHandler {
  /** Clears every policy's counters for a client key (`req.rateLimit.key`, or a raw IP). */
  reset(key: string | number): Promise<void>;
  /** Reads a client key's state without counting a request. */
  get(key: string | number): Promise<RateLimitState>;
}

/**
 * Redis-backed rate limiting: one Lua script (one round trip) per request, at most, checks every policy
 * atomically, using Redis time. See the README, "Rate limiting".
 *
 * @example
 * app.use('/api', rateLimit({ redis, limit: 100, window: '1m' }))
 */
export function rateLimit(options: RateLimitOptions): RateLimitMiddleware {
  const { rateLimitMiddleware, reset, get } = createLimiter(resolveOptions(options));
  return Object.assign(rateLimitMiddleware, { reset, get }) as RateLimitMiddleware;
}
