/**
 * The option names each part of the cache accepts, exactly those of its options type in types.ts
 * (keep the two in step), and hints for names people bring from other libraries (apicache,
 * express-cache…): anything else is refused at construction, never silently ignored.
 */

export const WRAP_KNOWN = new Set([
  'ttl',
  'tags',
  'cacheNullFor',
  'serializer',
  'staleWhileRevalidate',
  'staleIfError',
]);

export const CACHE_KNOWN = new Set([
  'redis',
  'l1',
  'prefix',
  'timeout',
  'lockTimeout',
  'jitter',
  'name',
  'logger',
]);

export const CACHE_RENAMED: Record<string, string> = {
  ttl: "the lifetime belongs to each call: cache.wrap(key, fn, { ttl: '10m' })",
  max: 'use "l1: { max }"',
  client: 'pass the ioredis client as "redis"',
  redisClient: 'pass the ioredis client as "redis"',
  store: 'pass the ioredis client as "redis"',
};

export const RESPONSE_KNOWN = new Set([
  'redis',
  'cache',
  'ttl',
  'key',
  'scope',
  'tags',
  'vary',
  'query',
  'staleWhileRevalidate',
  'staleIfError',
  'l1',
  'jitter',
  'maxBodySize',
  'statuses',
  'methods',
  'lockTimeout',
  'timeout',
  'shouldCache',
  'prefix',
  'sessionCookie',
  'credentialHeaders',
  'name',
  'logger',
]);

// apicache and express-cache option names people will bring along.
export const RESPONSE_RENAMED: Record<string, string> = {
  defaultDuration: 'use "ttl" (ms or a duration string such as \'5m\')',
  duration: 'use "ttl"',
  expire: 'use "ttl"',
  statusCodes: 'use "statuses" (the statuses that may be stored)',
  appendKey: 'use "key" or "scope"',
  keyGenerator: 'use "key" (or "scope" for per-user entries)',
  redisClient: 'pass the ioredis client as "redis"',
  client: 'pass the ioredis client as "redis"',
  store: 'pass the ioredis client as "redis", or a createCache() instance as "cache"',
  debug: 'watch hits and misses with onKitEvent() (component "cache")',
  stale: 'use "staleWhileRevalidate" and/or "staleIfError"',
  max: 'use "l1: { max }"',
};

export const L1_KNOWN = new Set(['max', 'maxSize', 'ttl']);
export const L1_RENAMED: Record<string, string> = {
  maxItems: 'use "max"',
  maxEntries: 'use "max"',
  size: 'use "max" (entries) or "maxSize" (bytes)',
  maxBytes: 'use "maxSize"',
};
