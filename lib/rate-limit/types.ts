import type { NextFunction, Request, Response } from 'express';
import type { RedisClient } from '../client';
import type { Duration } from '../duration';

/** How a policy counts. The README ("Rate limiting") gives each one's promise and a worked example. */
export type Algorithm = 'fixed-window' | 'sliding-window' | 'token-bucket' | 'gcra';

/** Which rate-limit response headers to send. */
export type HeadersMode = 'draft-8' | 'draft-7' | 'draft-6' | 'legacy';

/** One quota: `limit` cost units per `window`, counted by `algorithm`. */
export interface RateLimitPolicy {
  /** Requests (or cost units) per window. Whole number from 1 to 10^12. */
  limit: number;
  /** Window length: ms, or a duration string such as `'1s'`, `'1m'`, `'1h'`. At least 1 ms. */
  window: Duration;
  /** Default: the limiter's `algorithm` option, else `'sliding-window'`. */
  algorithm?: Algorithm | undefined;
  /**
   * Name shown in the `RateLimit-Policy` / `RateLimit` headers and in `req.rateLimit.policy`.
   * Default `<limit>-in-<window>`, e.g. `100-in-1m`.
   */
  name?: string | undefined;
}

/** What the limiter knows about one client after a decision (`req.rateLimit`). */
export interface RateLimitInfo {
  /** Limit of the binding policy (the one that denied, else the one with the least left). */
  limit: number;
  /** Cost units left in the binding policy after this request. */
  remaining: number;
  /** Milliseconds until the binding policy's quota is fully restored. */
  resetMs: number;
  /** Cost units used in the binding policy, `limit - remaining`. */
  used: number;
  /** The client key (after IPv6 subnet grouping), as `limiter.reset(key)` expects it. */
  key: string;
  /** Name of the binding policy. */
  policy: string;
}

/** One policy's state, as `limiter.get(key)` reports it. */
export interface PolicyState {
  policy: string;
  limit: number;
  remaining: number;
  used: number;
  resetMs: number;
}

/** `limiter.get(key)`: the binding policy's view plus every policy's state. */
export interface RateLimitState extends RateLimitInfo {
  policies: PolicyState[];
}

/** Passed to a custom `handler` when a request is denied. */
export interface DeniedInfo extends RateLimitInfo {
  /** Seconds the client should wait (the `Retry-After` value). */
  retryAfter: number;
  statusCode: number;
  /**
   * The `message` option, else the default problem detail: a handler ported from express-rate-limit
   * (`res.status(options.statusCode).send(options.message)`) keeps working.
   */
  message: string;
}

type MaybePromise<T> = T | Promise<T>;

/** Options of {@link rateLimit}. Defaults live in options.ts (`DEFAULTS`). */
export interface RateLimitOptions {
  /** ioredis `Redis` or `Cluster` (e.g. `createRedis()` or the app's own `new Redis(url)`). Required. */
  redis: RedisClient;
  /** Requests (or cost units) per `window`. Required unless `policies` is given. */
  limit?: number | undefined;
  /** Window length, ms or a duration string. Required unless `policies` is given. */
  window?: Duration | undefined;
  /** Default `'sliding-window'`. */
  algorithm?: Algorithm | undefined;
  /**
   * Several quotas checked in one round trip (e.g. 10/s burst AND 1000/h). A request passes only if
   * every policy allows it; a denied request consumes from none. Replaces `limit`/`window`.
   */
  policies?: RateLimitPolicy[] | undefined;
  /**
   * Client key: a non-empty string, or a finite number (a user id) used as its text. Default:
   * `req.ip`, IPv6 grouped by `ipv6Subnet` (as is a custom key that is exactly an IPv6 address).
   */
  key?: ((req: Request, res: Response) => MaybePromise<string | number>) | undefined;
  /** Prefix length that groups IPv6 clients (default 56), or `false` to use full addresses. */
  ipv6Subnet?: number | false | undefined;
  /**
   * Cost units this request consumes: a whole number >= 1, or a function of the request. Default 1.
   * A function answering more than the smallest limit sends a `RangeError` to `next()`: such a
   * request could never pass.
   */
  cost?: number | ((req: Request, res: Response) => MaybePromise<number>) | undefined;
  /** Return true to let a request through without counting it. */
  skip?: ((req: Request, res: Response) => MaybePromise<boolean>) | undefined;
  /**
   * Give the cost back when the response succeeded (see `requestWasSuccessful`). Default false.
   * Only what the request still holds comes back: the part time has already restored does not.
   */
  skipSuccessfulRequests?: boolean | undefined;
  /**
   * Give the cost back when the response failed (see `requestWasSuccessful`). Default false. A
   * client that went away before the answer stays counted: the work was still done.
   */
  skipFailedRequests?: boolean | undefined;
  /**
   * Decides success for the two options above. Default: status < 400. May answer a Promise (as
   * express-rate-limit's may): the refund waits for it; a throw or rejection keeps the cost counted.
   */
  requestWasSuccessful?: ((req: Request, res: Response) => boolean | PromiseLike<boolean>) | undefined;
  /** Count and report (headers, `req.rateLimit`, events) but never block. Default false. */
  dryRun?: boolean | undefined;
  /** Header flavour, or `false` for none. Default `'draft-8'`. `Retry-After` is always sent on 429. */
  headers?: HeadersMode | false | undefined;
  /** Status of a denied request. Default 429. */
  statusCode?: number | undefined;
  /** `detail` of the problem+json body of a denied request. Default: a sentence with the wait. */
  message?: string | undefined;
  /** Replaces the denied response (headers incl. `Retry-After` are already set). */
  handler?: ((req: Request, res: Response, next: NextFunction, info: DeniedInfo) => void) | undefined;
  /** When Redis is down or slower than `timeout`: `'open'` (default) lets requests through; `'closed'` answers 503. */
  failMode?: 'open' | 'closed' | undefined;
  /** Longest wait for Redis per request: ms or a duration string, at most 2^31-1 ms. Default 250. */
  timeout?: Duration | undefined;
  /** Key prefix. Default `'erk:'`. */
  prefix?: string | undefined;
  /**
   * Instance name, for events and keys. Limiters with the same policies and no name share counters
   * (that is what lets many app instances agree); give different routes' limiters different names.
   */
  name?: string | undefined;
  /**
   * In-process cache of denied keys until their retry time, so repeat offenders are rejected without a
   * Redis call. It only ever denies, so it can never allow more than `limit`. `false` turns it off.
   * Default `{ max: 10000 }`.
   */
  denyCache?: false | { max?: number } | undefined;
  /**
   * Send the decisions for one client key made in the same event-loop turn to Redis as one script
   * call (answered in arrival order, exactly as separate calls would be). Cuts Redis and app CPU under
   * concurrent load at no added latency. Refunds (`skipSuccessfulRequests`, `skipFailedRequests`) of
   * responses that finish in the same turn are coalesced the same way. `false` sends one call per
   * request and per refund. Default `true`.
   */
  coalesce?: boolean | undefined;
  /** Where one-time warnings go. Default `console`. */
  logger?: { warn(message: string): void } | undefined;
}

declare global {
  namespace Express {
    interface Request {
      /** Set by `rateLimit()` for handlers downstream. */
      rateLimit?: RateLimitInfo;
    }
  }
}
