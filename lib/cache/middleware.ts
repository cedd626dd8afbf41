import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import onFinished from 'on-finished';
import { optionError } from '../errors';
import { scopePart } from '../keys';
import { type Captured, captureResponse, type Originals } from './capture';
import type { Entry } from './entry';
import type { FillVary } from './fill-store';
import { refusal, storedHeaders } from './http';
import { invalidatesMiddleware } from './invalidates';
import { defaultKey, entryKey, headerValue, withVary } from './key';
import { type Rec, toRec } from './l1';
import { resolveResponseOptions } from './options';
import { perUserReason } from './per-user';
import { refreshTicketOf } from './refresh';
import { respond, type XCache } from './respond';
import { createRevalidator } from './revalidate';
import type { VaryMarker } from './store';
import type { CacheResponseOptions } from './types';
import { l1Lookup, l1Put, sameVariant, varyOf } from './vary';
import { Cache, createCache, type InvalidateTarget } from './wrap';

/** For a route's own 304: whether anything but its status keeps it from the cache. */
const NOT_MODIFIED: ReadonlySet<number> = new Set([304]);

/** The `cacheResponse()` middleware, carrying its admin API. */
export interface CacheResponseMiddleware extends RequestHandler {
  /** Deletes entries by tag and/or cache key, in Redis and in every instance's L1. */
  invalidate(target: InvalidateTarget): Promise<void>;
  /**
   * Middleware for write routes: once the route answers 2xx or 303, invalidates what `select`
   * returns (tags, or `{ tags, keys }`) before the response is finished, so the client's next read
   * sees fresh data.
   */
  invalidates(select: (req: Request, res: Response) => string[] | InvalidateTarget): RequestHandler;
  /** The cache key of a request (what `invalidate({ keys })` takes), or undefined when it bypasses. */
  keyOf(req: Request): string | undefined;
  /** The underlying cache (its `wrap()` shares this L1 and bus). */
  readonly cache: Cache;
}

/**
 * What a coalesced request learns from the request that went to the origin for it: an entry, Redis
 * is down, the answer is not storable (go to the origin), or the fill failed or took too long (look
 * up and queue on the lock like any miss).
 */
/** Ends a fill's in-process flight with its result; `close` only stops new requests joining it. */
type Settle = ((result: FlightResult) => void) & { close?: () => void };

type FlightResult =
  | { rec: Rec; headers: IncomingHttpHeaders }
  | { bypass: true }
  | { uncacheable: true }
  | { retry: true };

/** HTTP response cache backed by Redis (+ in-process L1). See the README, "Response cache". */
export function cacheResponse(options: CacheResponseOptions): CacheResponseMiddleware {
  const o = resolveResponseOptions(options);
  if (options.cache !== undefined && !(options.cache instanceof Cache)) {
    throw optionError('cache', 'must be a cache made by createCache()');
  }
  const cache =
    options.cache ??
    createCache({
      redis: options.redis as NonNullable<CacheResponseOptions['redis']>,
      l1: options.l1,
      prefix: options.prefix,
      timeout: options.timeout,
      lockTimeout: options.lockTimeout,
      jitter: options.jitter,
      name: options.name,
      logger: options.logger,
    });
  const { l1 } = cache;
  const { prefix, logger, lockTimeoutMs } = cache.options;
  const jitter = o.jitter ?? cache.options.jitter;
  const trustsKey = o.key !== undefined || o.scope !== undefined;
  const flights = new Map<string, Promise<FlightResult>>();
  const event = (type: string, key: string, details?: Record<string, unknown>) =>
    cache.event(type, { name: o.name ?? cache.options.name, key, ...details });
  const refresh = createRevalidator(cache, event);

  function keyOf(req: Request): string | undefined {
    let key = o.key ? o.key(req) : defaultKey(req);
    if (typeof key !== 'string' || key === '') return undefined;
    if (o.vary.length > 0) key = withVary(key, req.headers, o.vary);
    if (o.scope) {
      const scope = scopePart(o.scope(req), 'cacheResponse');
      if (scope === undefined) return undefined;
      key += `\nscope: ${scope}`;
    }
    return key;
  }

  const middleware = function cacheResponse(req: Request, res: Response, next: NextFunction) {
    if (!o.methods.has(req.method)) return next();
    const ticket = refreshTicketOf(req);
    if (!trustsKey && !ticket) {
      const perUser = perUserReason(req.headers, o.perUser);
      if (perUser) return bypass(res, next, '', perUser);
    }
    let key: string | undefined;
    try {
      key = keyOf(req);
    } catch (error) {
      return next(error);
    }
    if (key === undefined) return bypass(res, next, '', 'no-key');
    const redisKey = entryKey(prefix, key);
    if (ticket) {
      fill(req, res, next, key, redisKey, ticket.token, undefined, ticket.done, ticket.since);
      return;
    }
    if (l1) {
      const now = Date.now();
      const rec = l1Lookup(l1, key, req.headers, now);
      if (rec) {
        if (now < rec.freshUntil) return serve(req, res, rec, 'HIT', now, 'l1-hit', key);
        if (now < rec.swrUntil) {
          serve(req, res, rec, 'STALE', now, 'stale', key);
          return refresh(req, key, redisKey, true);
        }
      }
    }
    miss(req, res, next, key, redisKey).catch(next);
  } as CacheResponseMiddleware;

  function bypass(res: Response, next: NextFunction, key: string, reason: string): void {
    res.setHeader('X-Cache', 'BYPASS');
    event('bypass', key, { reason });
    next();
  }

  /** A coalesced request waits no longer than a cross-process waiter would (3 × lockTimeout). */
  function waitFor(flight: Promise<FlightResult>): Promise<FlightResult> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<FlightResult>((resolve) => {
      timer = setTimeout(() => resolve({ uncacheable: true }), 3 * lockTimeoutMs);
      timer.unref?.();
    });
    return Promise.race([flight, late]).finally(() => clearTimeout(timer));
  }

  async function miss(req: Request, res: Response, next: NextFunction, key: string, redisKey: string) {
    // A fill that an invalidation overtook ends in `retry` (its store was dropped), and whoever
    // waited on it looks up afresh: see fill().
    const pending = flights.get(key);
    if (pending) {
      // Past the wait (a stuck origin), straight to the origin, as a waiter in another process would.
      const result = await waitFor(pending);
      if ('rec' in result && sameVariant(result.rec, result.headers, req.headers)) {
        const now = Date.now();
        const fresh = now < result.rec.freshUntil;
        return serve(req, res, result.rec, fresh ? 'HIT' : 'STALE', now, fresh ? 'hit' : 'stale', key);
      }
      if ('bypass' in result) return bypass(res, next, key, 'redis');
      if ('uncacheable' in result) {
        // Not storable for the leader, likely not for us either: straight to the origin, no queueing.
        res.setHeader('X-Cache', 'MISS');
        return next();
      }
      // Another variant than ours, or the fill failed: this request looks up (and queues) on its own,
      // so a failing origin still sees one request at a time, not every coalesced one at once.
    }
    const head = req.method === 'HEAD';
    let settle: Settle = () => {};
    if (!head && !pending) {
      const flight = new Promise<FlightResult>((resolve) => {
        const close = () => {
          if (flights.get(key) === flight) flights.delete(key);
        };
        settle = Object.assign(
          (result: FlightResult) => {
            close();
            resolve(result);
          },
          { close },
        );
      });
      flights.set(key, flight);
    }
    if (head) {
      // HEAD never fills (it has no body to store); it is answered from a GET entry when there is one.
      const found = await cache.fetch(redisKey, req.headers, '').catch(() => undefined);
      const now = Date.now();
      if (found?.kind === 'hit' && now < found.rec.swrUntil) {
        if (now < found.rec.freshUntil) return serve(req, res, found.rec, 'HIT', now, 'hit', key);
        // Stale, as for a GET: the refresh replays the request as a GET.
        serve(req, res, found.rec, 'STALE', now, 'stale', key);
        return refresh(req, key, redisKey);
      }
      res.setHeader('X-Cache', found ? 'MISS' : 'BYPASS');
      if (found?.kind === 'hit' && o.sieMs > 0 && now < found.rec.expiresAt) {
        // Past staleWhileRevalidate the route answers, but its error gets the stale entry, as a GET's does.
        const { rec } = found;
        const before = res.getHeaders();
        captureResponse(
          res,
          {
            maxBodySize: 0,
            statuses: o.statuses,
            ifNoneMatch: undefined,
            observeOnly: true,
            onServerError: (originals) => serveInstead(req, res, rec, before, originals, key),
          },
          () => {},
        );
      }
      return next();
    }
    // Read before the lookup: an invalidation while it is in flight must keep its answer out of L1.
    const generation = l1?.generation ?? 0;
    const acquired = await cache.acquire(redisKey, req.headers);
    if (acquired.kind === 'bypass') {
      settle({ bypass: true });
      return bypass(res, next, key, 'redis');
    }
    if (acquired.kind === 'hit') {
      const { rec } = acquired;
      settle({ rec, headers: req.headers });
      const now = Date.now();
      if (l1) l1Put(l1, key, rec, req.headers, generation);
      if (now < rec.freshUntil) return serve(req, res, rec, 'HIT', now, 'hit', key);
      serve(req, res, rec, 'STALE', now, 'stale', key);
      return refresh(req, key, redisKey);
    }
    fill(
      req,
      res,
      next,
      key,
      redisKey,
      acquired.token,
      acquired.stale,
      settle,
      acquired.since,
      acquired.marker,
    );
  }

  /** Runs the origin, teeing its response into the cache. */
  function fill(
    req: Request,
    res: Response,
    next: NextFunction,
    key: string,
    redisKey: string,
    token: string,
    stale: Rec | undefined,
    settle: Settle,
    since?: number,
    marker?: VaryMarker,
  ): void {
    const before = res.getHeaders();
    const generation = l1?.generation ?? 0;
    const stop = cache.holdLock(redisKey, token);
    const fallback = stale && o.sieMs > 0 && Date.now() < stale.expiresAt ? stale : undefined;
    res.setHeader('X-Cache', 'MISS');
    event('miss', key);
    captureResponse(
      res,
      {
        maxBodySize: o.maxBodySize,
        statuses: o.statuses,
        ifNoneMatch: req.headers['if-none-match'],
        onServerError: fallback
          ? (originals) => serveInstead(req, res, fallback, before, originals, key)
          : undefined,
      },
      (captured, reason) => {
        stop();
        let entry: Entry | undefined;
        try {
          entry =
            captured && (!o.shouldCache || o.shouldCache(req, res))
              ? toEntry(req, res, captured, before)
              : undefined;
        } catch (error) {
          logger.warn({ key, error }, 'the tags or shouldCache option threw; response not cached');
        }
        if (!entry && reason === 'stale-if-error' && fallback) {
          // The origin is failing: requests coalesced behind this one get the same stale answer.
          cache.releaseFill(redisKey, token);
          return settle({ rec: fallback, headers: req.headers });
        }
        if (!entry) {
          event('uncacheable', key, { reason: reason ?? 'shouldCache' });
          // An aborted response or a server error says nothing about the next one, and a failing origin
          // needs the lock's one-at-a-time protection most; any other refusal (404, Set-Cookie, too
          // large…) likely repeats, so other misses need not queue for it.
          // Nor does a 304 the route answered a conditional request with (Express does so itself for
          // If-Modified-Since), unless more than its status refuses it (Set-Cookie, private…): the
          // next client without that validator gets a body to store.
          const release = () => {
            if (
              reason === 'aborted' ||
              reason === 'server-error' ||
              res.statusCode >= 500 ||
              (res.statusCode === 304 && refusal(res, 304, NOT_MODIFIED) === undefined)
            ) {
              cache.releaseFill(redisKey, token);
              return settle({ retry: true });
            }
            cache.releaseUncacheable(redisKey, token);
            settle({ uncacheable: true });
          };
          // A 304 is judged by its headers as they went out: express-session in front adds its
          // Set-Cookie inside writeHead, after this is first known.
          if (res.statusCode === 304 && !res.headersSent) onFinished(res, release);
          else release();
          return;
        }
        let rec: Rec;
        let vary: FillVary | undefined;
        try {
          rec = toRec(entry, redisKey, 0, Date.now());
          const names = varyOf(entry);
          cache.learnVary(names);
          vary =
            names.length > 0
              ? {
                  names,
                  values: names.map((n) => headerValue(req.headers, n)),
                  generation: marker?.names === names.join(',') ? marker.generation : undefined,
                }
              : undefined;
        } catch (error) {
          // Runs from the response's end: a throw would strand the requests coalesced behind this one.
          logger.warn({ key, error }, 'could not prepare the response for the cache; not cached');
          cache.releaseFill(redisKey, token);
          return settle({ retry: true });
        }
        // Requests coalesced behind this one get its answer once it is stored: when an invalidation
        // (from any instance) took the lock while the origin ran, they look up again instead, since
        // the answer may be older than the write behind it; nor does it go into L1. Requests that
        // come after this answer do not join any more: they look up on their own, as before.
        settle.close?.();
        void cache.store(redisKey, entry, token, vary, since).then((outcome) => {
          if (outcome === 'dropped') return settle({ retry: true });
          if (l1) l1Put(l1, key, rec, req.headers, generation);
          settle({ rec, headers: req.headers });
        });
      },
    );
    next();
  }

  function toEntry(req: Request, res: Response, captured: Captured, before: OutgoingHttpHeaders): Entry {
    const freshMs = cache.jittered(o.ttlMs, jitter);
    const headers = storedHeaders(captured.headers, before);
    return {
      status: captured.status,
      headers,
      body: captured.body,
      etag: captured.etag,
      createdAt: Date.now(),
      ttlMs: freshMs + o.swrMs + o.sieMs,
      freshMs,
      swrMs: o.swrMs,
      sieMs: o.sieMs,
      tags: o.tags ? o.tags(req, res) : [],
      negative: 0,
    };
  }

  /** stale-if-error: the origin failed before sending anything; answer with the stale entry instead. */
  function serveInstead(
    req: Request,
    res: ServerResponse,
    rec: Rec,
    before: OutgoingHttpHeaders,
    originals: Originals,
    key: string,
  ): boolean {
    for (const name of res.getHeaderNames()) if (!(name in before)) res.removeHeader(name);
    event('stale-if-error', key);
    respond(req, res, rec, 'STALE', Date.now(), originals);
    return true;
  }

  function serve(
    req: Request,
    res: Response,
    rec: Rec,
    xcache: XCache,
    now: number,
    type: string,
    key: string,
  ) {
    event(type, key);
    respond(req, res, rec, xcache, now, res);
  }

  middleware.invalidate = (target: InvalidateTarget) => cache.invalidate(target);
  middleware.keyOf = keyOf;
  Object.defineProperty(middleware, 'cache', { value: cache, enumerable: true });
  middleware.invalidates = (select) => invalidatesMiddleware(cache, logger, select);
  return middleware;
}
