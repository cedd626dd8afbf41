import type { Request, Response } from 'express';
import type { RedisClient } from '../client';
import type { Duration } from '../duration';

// The options users pass to the cache: its public contract. Defaults and checks live in options.ts,
// the accepted names (kept in step with these types) in option-names.ts.

/**
 * Where the cache reports entries it had to throw away and background work that failed: pino's
 * argument order, details first (pino and console both fit). An error comes as `details.err`, the
 * name pino's standard serializer prints.
 */
export interface CacheLogger {
  warn(details: object, message: string): void;
}

/** The in-process tier. Entries live here for at most their own lifetime (and `ttl` when given). */
export interface L1Options {
  /** Most entries kept. Default 1000. */
  max?: number | undefined;
  /** Most bytes of bodies kept. Default 64 MiB. */
  maxSize?: number | undefined;
  /** Upper bound of an entry's stay in L1, a safety net should an invalidation message be lost. */
  ttl?: Duration | undefined;
}

/** Options of {@link createCache}. */
export interface CreateCacheOptions {
  /** An ioredis `Redis` or `Cluster` (e.g. `createRedis()` or your own `new Redis(url)`). Required. */
  redis: RedisClient;
  /** In-process tier, kept coherent across instances over pub/sub. Default `{ max: 1000, maxSize: 64 MiB }`; `false` turns it off. */
  l1?: L1Options | false | undefined;
  /** Prefix of every key and of the invalidation channel. Default `'erk:'`. */
  prefix?: string | undefined;
  /** Longest wait for Redis on the request path; slower means bypass. Default 150 ms. */
  timeout?: Duration | undefined;
  /**
   * How long a concurrent miss waits for the instance that fills the entry before it runs the origin
   * itself, should that instance die (the lock expires after this). Default 5 s; at least 100 ms.
   */
  lockTimeout?: Duration | undefined;
  /** Random spread of the fresh lifetime, as a fraction: 0.1 means ±10 %. Default 0.1. */
  jitter?: number | undefined;
  /** Name reported in events. */
  name?: string | undefined;
  /** Receives warnings about corrupt entries and failed background work. Default: `console.warn`. */
  logger?: CacheLogger | undefined;
}

/** A custom (de)serializer for {@link Cache.wrap}. Default: JSON. */
export interface Serializer<T> {
  serialize(value: T): string | Buffer;
  deserialize(raw: Buffer): T;
}

/** Options of one {@link Cache.wrap} call. */
export interface WrapOptions<T> {
  /** Fresh lifetime. Required. */
  ttl: Duration;
  /** Tags for {@link Cache.invalidate}. */
  tags?: string[] | undefined;
  /** Cache `null`/`undefined` results for this long. Default: never cache them. */
  cacheNullFor?: Duration | undefined;
  /** Default: JSON. */
  serializer?: Serializer<T> | undefined;
  /** After the fresh lifetime, return the old value for this long while one refresh runs. Default 0. */
  staleWhileRevalidate?: Duration | undefined;
  /** When `fn` throws, return an expired value up to this long after it went stale. Default 0. */
  staleIfError?: Duration | undefined;
}

/** Options of {@link cacheResponse}. */
export interface CacheResponseOptions {
  /** An ioredis `Redis` or `Cluster`. Required unless `cache` is given. */
  redis?: RedisClient | undefined;
  /** A cache made by `createCache()`, to share its L1, bus and settings between middlewares. */
  cache?: import('./wrap').Cache | undefined;
  /** Fresh lifetime of a response. Required. */
  ttl: Duration;
  /**
   * The cache key of a request. Default: method + path + sorted query. A custom key is trusted to
   * hold whatever makes responses differ per user, so requests with credentials are cached under it.
   */
  key?: ((req: Request) => string) | undefined;
  /**
   * Per-user scope (e.g. `req => req.session.userId`). With it, requests carrying `Authorization`, a
   * session cookie or a credential header are cached, keyed by the scope; an empty scope means bypass.
   */
  scope?: ((req: Request) => string | number | undefined | null) | undefined;
  /**
   * Tags of a stored response, for `invalidate({ tags })`. One string is one tag; a return that is
   * not strings leaves the response uncached (logged).
   */
  tags?: ((req: Request, res: Response) => string | string[]) | undefined;
  /**
   * Request headers that split the key, on top of the response's own `Vary`. Their values become part
   * of `keyOf(req)`; tag the entries to invalidate every value at once.
   */
  vary?: string[] | undefined;
  /**
   * The query parameters the route reads. A request carrying any other one passes to the route
   * uncached (BYPASS, reason `query`), so a client adding `?cb=<random>` cannot fill Redis with
   * copies. `page` also covers `page[]` and `page[x]`. Default: every query is cached.
   */
  query?: readonly string[] | undefined;
  /** Serve a stale entry for this long after `ttl` while one background refresh runs. Default 0. */
  staleWhileRevalidate?: Duration | undefined;
  /** Serve a stale entry for this long after `ttl` when the origin fails (5xx or throws). Default 0. */
  staleIfError?: Duration | undefined;
  /** In-process tier (only when `cache` is not given). Default `{ max: 1000, maxSize: 64 MiB }`; `false` turns it off. */
  l1?: L1Options | false | undefined;
  /** Fraction of random spread of `ttl`. Default 0.1 (±10 %). */
  jitter?: number | undefined;
  /** Bodies larger than this pass through uncached, without being buffered. Default 1 MiB; at most 511 MiB. */
  maxBodySize?: number | undefined;
  /** Statuses that may be stored. Default `[200, 203, 204, 300, 301, 308]`; `206`, `304` and `1xx` are refused. */
  statuses?: number[] | undefined;
  /**
   * Methods served from cache (HEAD always follows GET). Default `['GET']`. Others (`POST`) need a
   * `key` that covers the request body: the default key is the method and URL only.
   */
  methods?: string[] | undefined;
  /** See {@link CreateCacheOptions.lockTimeout}. Default 5 s. */
  lockTimeout?: Duration | undefined;
  /** See {@link CreateCacheOptions.timeout}. Default 150 ms. */
  timeout?: Duration | undefined;
  /** Last word on whether a response is stored (after the built-in safety rules). */
  shouldCache?: ((req: Request, res: Response) => boolean) | undefined;
  /** Key prefix (only when `cache` is not given). Default `'erk:'`. */
  prefix?: string | undefined;
  /**
   * Cookie names that mark a request as per-user (not answered from the cache without `scope`/`key`).
   * Default (case-insensitive): any name containing `sess`, `auth`, `token`, `jwt`, `login`, `logged`,
   * `remember`, `identity` or `api-key`/`apikey`, a `sid` or `user-id`/`uid` part (`connect.sid`,
   * `app_sid`, `user_id`), `wordpress_sec…`, or the name `id`: `appSession`, `sessionToken`,
   * `XSRF-TOKEN`, `auth_token`, `remember_me`… A RegExp or a list of exact names replaces that rule
   * (e.g. `['connect.sid']` to cache requests carrying other cookies); `false`: no cookie counts.
   */
  sessionCookie?: RegExp | string[] | false | undefined;
  /**
   * Request headers (by name) that carry a credential or an identity, and so mark a request as
   * per-user like `Authorization` (which always does). Default: any name containing `auth`, `token`,
   * `jwt`, `sess`, `api-key`/`apikey`, `principal`, `consumer`, `credential`, `oidc`, `email`,
   * `userinfo`, `forwarded-groups` or `client-cert`/`client-dn`/`client-s-dn`/`client-verify`, or ending in `user`/`username`/`userid` (`-id`,
   * `-email`, `-name`): `X-Api-Key`, `X-Auth-Token`, `X-Forwarded-User`, `X-Consumer-Id`,
   * `X-Ms-Client-Principal`…, but no `Sec-*` header. A RegExp (matched regardless of case) or a list
   * of names replaces that rule; `false`: only `Authorization` counts. `Sec-*` headers, HTTP/2
   * pseudo-headers and `X-Vercel-OIDC-Token` never count, also under a RegExp; a list naming one is
   * refused.
   */
  credentialHeaders?: RegExp | string[] | false | undefined;
  /** Name reported in events. */
  name?: string | undefined;
  /** See {@link CreateCacheOptions.logger}. */
  logger?: CacheLogger | undefined;
}
