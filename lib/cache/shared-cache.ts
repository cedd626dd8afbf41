import { optionError } from '../errors';
import { givenLogger } from '../logger';
import { KIT_VERSION } from '../version';
import { CACHE_BRAND, isKitCache } from './core';
import { type ResolvedCacheOptions, type ResolvedL1, resolveCacheOptions } from './options';
import type { CacheResponseOptions } from './types';
import { type Cache, createCache } from './wrap';

// Which cache a `cacheResponse()` works on: the one its `cache` option brings (checked: a cache of
// this copy of the kit, and no setting given beside it that it would silently ignore), or its own.

/** The cache behind a `cacheResponse()`: `options.cache`, checked, or a new one from its settings. */
export function cacheFor(options: CacheResponseOptions): Cache {
  if (options.cache === undefined) {
    return createCache({
      redis: options.redis as NonNullable<CacheResponseOptions['redis']>,
      l1: options.l1,
      prefix: options.prefix,
      timeout: options.timeout,
      lockTimeout: options.lockTimeout,
      jitter: options.jitter,
      name: options.name,
      logger: options.logger,
    });
  }
  if (!isKitCache(options.cache)) throw notKitCache(options.cache);
  refuseCacheSettings(options, options.cache);
  return options.cache;
}

/**
 * Settings of the shared cache itself: given beside `cache`, they would be ignored (its own apply),
 * so a `timeout` or `prefix` the caller believes in would silently not hold.
 */
const CACHE_SETTINGS = ['l1', 'prefix', 'timeout', 'lockTimeout', 'logger'] as const;

function sameAsCache(
  name: (typeof CACHE_SETTINGS)[number],
  options: CacheResponseOptions,
  own: ResolvedCacheOptions,
): boolean {
  // Resolved as createCache would (so '150ms' equals 150), with its validation errors.
  const resolved = resolveCacheOptions({ redis: own.redis, [name]: options[name] });
  switch (name) {
    case 'prefix':
      return resolved.prefix === own.prefix;
    case 'timeout':
      return resolved.timeoutMs === own.timeoutMs;
    case 'lockTimeout':
      return resolved.lockTimeoutMs === own.lockTimeoutMs;
    case 'logger':
      return options.logger === givenLogger(own.logger);
    case 'l1':
      return (
        resolved.l1 === own.l1 || (resolved.l1 !== false && own.l1 !== false && sameL1(resolved.l1, own.l1))
      );
  }
}

function sameL1(a: ResolvedL1, b: ResolvedL1): boolean {
  return a.max === b.max && a.maxSize === b.maxSize && a.ttlMs === b.ttlMs;
}

function refuseCacheSettings(options: CacheResponseOptions, cache: Cache): void {
  const fix = (name: string) => `Set ${name} in createCache({ ... }) instead, or leave out \`cache\`.`;
  for (const name of CACHE_SETTINGS) {
    // The cache's own setting given again (one object of common settings spread into both) is no conflict.
    if (options[name] !== undefined && !sameAsCache(name, options, cache.options)) {
      throw optionError(name, "differs from the shared cache's, which `cache` brings", fix(name));
    }
  }
  // The same client is harmless (a common way to write it); another one would be ignored.
  if (options.redis !== undefined && options.redis !== cache.redis) {
    throw optionError('redis', "differs from the shared cache's client, which `cache` brings", fix('redis'));
  }
}

function notKitCache(value: unknown): Error {
  const version = (value as Record<symbol, unknown> | null)?.[CACHE_BRAND];
  if (typeof version !== 'string') return optionError('cache', 'must be a cache made by createCache()');
  return optionError(
    'cache',
    `was made by createCache() of express-redis-kit ${version}, another copy than this cacheResponse's (${KIT_VERSION})`,
    'Import createCache and cacheResponse from one copy (see `npm ls express-redis-kit`).',
  );
}
