/** Response cache (`cacheResponse`), function cache (`createCache().wrap`) and the Redis lock behind them. */

export { CorruptEntryError } from './entry';
export { LockBusyError, LockLostError, type WithLockOptions, withLock } from './lock';
export { type CacheResponseMiddleware, cacheResponse } from './middleware';
export { REFRESH as CACHE_REFRESH } from './refresh';
export type {
  CacheLogger,
  CacheResponseOptions,
  CreateCacheOptions,
  L1Options,
  Serializer,
  WrapOptions,
} from './types';
export { Cache, createCache, type InvalidateTarget } from './wrap';
