/** express-redis-kit: the public API. Everything not exported here is internal. */
export { type BreakerOptions, configureBreaker } from './breaker';
export {
  CACHE_REFRESH,
  Cache,
  type CacheLogger,
  type CacheResponseMiddleware,
  type CacheResponseOptions,
  CorruptEntryError,
  type CreateCacheOptions,
  cacheResponse,
  createCache,
  type InvalidateTarget,
  type L1Options,
  LockBusyError,
  LockLostError,
  type Serializer,
  type WithLockOptions,
  type WrapOptions,
  withLock,
} from './cache';
export type { RedisClient } from './client';
export {
  type CreateRedisOptions,
  closeRedis,
  connectRedis,
  createRedis,
  DEFAULT_REDIS_URL,
  type NodeAddress,
} from './connection';
export type { Duration } from './duration';
export {
  type Problem,
  RedisRefusedError,
  RedisTimeoutError,
  RedisUnavailableError,
  SessionEndedError,
} from './errors';
export { KIT_CHANNEL, type KitComponent, type KitEvent, onKitEvent } from './events';
export { pingRedis, type RedisHealth } from './health';
export {
  canonicalJson,
  defaultFingerprint,
  defaultStoreStatus,
  type IdempotencyMiddleware,
  type IdempotencyOptions,
  type IdempotencyRecordId,
  idempotency,
  type ResolvedIdempotencyOptions,
  type ScopeValue,
} from './idempotency';
export { maskUrl } from './mask-url';
export { type SubscribeOptions, subscribe } from './pubsub';
export {
  type Algorithm,
  type DeniedInfo,
  type HeadersMode,
  type PolicyState,
  type RateLimitInfo,
  type RateLimitMiddleware,
  type RateLimitOptions,
  type RateLimitPolicy,
  type RateLimitState,
  rateLimit,
} from './rate-limit';
export {
  KitSessionStore,
  type LoginData,
  type RedisSessionMiddleware,
  type RedisSessionOptions,
  redisSession,
  type SessionCookieOptions,
  type SessionInfo,
} from './session';
