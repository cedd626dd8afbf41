import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { problemType, sendProblem, thrownError } from '../errors';
import { hasKitListeners } from '../events';
import { scopePart } from '../keys';
import { firstPass, mark, warnPassedTwice } from '../marks';
import { hasBody } from '../request-body';
import { captureResponse } from './capture';
import { answerStaleOnError, type FillContext, fill, staleIfErrorOf } from './fill';
import { Flights, noFlight } from './flights';
import { forbidsStore, onlyIfCached } from './http';
import { invalidatesMiddleware } from './invalidates';
import { defaultKey, entryKey, hasOtherParameters, withVary } from './key';
import type { Rec } from './l1';
import { resolveResponseOptions } from './options';
import { hasClientCertificate, perUserReason } from './per-user';
import { refreshTicketOf } from './refresh';
import { respond, type XCache } from './respond';
import { createRevalidator } from './revalidate';
import { cacheFor } from './shared-cache';
import type { CacheResponseOptions } from './types';
import { l1Lookup, l1Put, sameVariant } from './vary';
import type { Cache, InvalidateTarget } from './wrap';

// The middleware's way through a request: key, L1, in-process coalescing (flights.ts), the Redis
// lookup with its fill lock (core.ts), and on a miss the fill that runs the route (fill.ts). Which
// cache it works on: shared-cache.ts; HTTP rules (what is stored, request directives): http.ts.

/** The `cacheResponse()` middleware, carrying its admin API. */
export interface CacheResponseMiddleware extends RequestHandler {
  /** Deletes entries by tag and/or cache key, in Redis and in every instance's L1. */
  invalidate(target: InvalidateTarget): Promise<void>;
  /**
   * Middleware for write routes: once the route answers 2xx or 303, invalidates what `select`
   * returns (tags, or `{ tags, keys }`) before the response is finished, so the client's next read
   * sees fresh data.
   */
  invalidates(select: (req: Request, res: Response) => string | string[] | InvalidateTarget): RequestHandler;
  /** The cache key of a request (what `invalidate({ keys })` takes), or undefined when it bypasses. */
  keyOf(req: Request): string | undefined;
  /** The underlying cache (its `wrap()` shares this L1 and bus). */
  readonly cache: Cache;
}

/** HTTP response cache backed by Redis (+ in-process L1). See the README, "Response cache". */

/**
 * The entries each request is being looked up or filled for. A request that reaches a cacheResponse
 * twice for the same entry (mounted on the app and again on the route, or two on one prefix) would
 * wait on its own fill, in this process or through its own Redis lock, for 3 × lockTimeout.
 */
const HANDLING = mark<Set<string>>('cache.handling');

/** A UTF-16 surrogate without its pair: text no UTF-8 encoding keeps. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
export function cacheResponse(options: CacheResponseOptions): CacheResponseMiddleware {
  const o = resolveResponseOptions(options);
  const cache = cacheFor(options);
  const { l1 } = cache;
  const { prefix, logger, lockTimeoutMs } = cache.options;
  const trustsKey = o.key !== undefined || o.scope !== undefined;
  // A coalesced request waits no longer than a cross-process waiter would (3 × lockTimeout).
  const flights = new Flights(3 * lockTimeoutMs, () => cache.heard);
  // `redisKey` as well, so these join the store and lock events, which know only that one.
  const event = (type: string, key: string, details?: Record<string, unknown>) => {
    if (!hasKitListeners()) return;
    const redisKey = key === '' ? undefined : entryKey(prefix, key);
    cache.event(type, { name: o.name ?? cache.options.name, key, redisKey, ...details });
  };
  const ctx: FillContext = { o, cache, jitter: o.jitter ?? cache.options.jitter, event };
  const refresh = createRevalidator(cache, event);

  function keyOf(req: Request): string | undefined {
    let key = o.key ? o.key(req) : defaultKey(req);
    if (typeof key !== 'string' || key === '') return undefined;
    // Part of the key, not a Vary marker under it: each value keeps its own entry, tags and fill lock,
    // so a route that sets its own Vary cannot drop it, and one tenant's tag never takes the others'.
    if (o.vary.length > 0) key = withVary(key, req.headers, o.vary);
    if (o.scope) {
      const scope = scopePart(o.scope(req), 'cacheResponse');
      if (scope === undefined) return undefined;
      key += `\nscope: ${scope}`;
    }
    // The Redis key is a digest of the key's UTF-8: a lone surrogate (a JSON-decoded id) becomes
    // U+FFFD there, so "\uD800" and "\uFFFD" would share one entry. No key: the request bypasses.
    if (LONE_SURROGATE.test(key)) return undefined;
    return key;
  }

  const middleware = function cacheResponse(req: Request, res: Response, next: NextFunction) {
    if (!o.methods.has(req.method)) return next();
    const ticket = refreshTicketOf(req);
    // Another cacheResponse's refresh (an app-wide one in front of the route's): theirs to take over.
    if (ticket && ticket.owner !== refresh) return next();
    // A GET's body is not in the default key, yet a route may read it (`req.body?.q ?? req.query.q`):
    // stored, the answer to one client's body would be served for everyone's plain GET.
    if (!o.key && !ticket && hasBody(req.headers)) return bypass(res, next, '', 'body');
    if (!trustsKey && !ticket) {
      const perUser =
        perUserReason(req.headers, o.perUser) ??
        (hasClientCertificate(req.socket) ? 'client-certificate' : undefined);
      if (perUser) return bypass(res, next, '', perUser);
    }
    if (o.query && !ticket && hasOtherParameters(req, o.query)) return bypass(res, next, '', 'query');
    let key: string | undefined;
    try {
      key = keyOf(req);
    } catch (error) {
      return next(thrownError(error, 'cacheResponse'));
    }
    if (key === undefined) return bypass(res, next, '', 'no-key');
    const redisKey = entryKey(prefix, key);
    if (!firstPass(HANDLING, req, redisKey)) return reachedTwice(next, key);
    if (ticket) {
      // Not the refreshed entry (what the key reads changed on the way: the refresh's lock is not
      // this key's), or the refresh is over (past its deadline, its lock released): passed on.
      if (ticket.redisKey !== redisKey || !ticket.claim()) return next();
      return fill(ctx, req, res, next, key, redisKey, ticket, ticket.done);
    }
    if (l1) {
      const now = Date.now();
      const rec = l1Lookup(l1, key, req.headers, now);
      if (rec && now < usableUntil(req, rec)) return serveEntry(req, res, rec, key, redisKey, 'l1-hit');
    }
    miss(req, res, next, key, redisKey).catch((error: unknown) => next(thrownError(error, 'cacheResponse')));
  } as CacheResponseMiddleware;

  /**
   * Whether a stale entry may be served while a background refresh runs. That refresh replays the
   * request as a body-less GET: a cached POST (a GraphQL query keyed on its body) cannot be replayed,
   * so past `ttl` it is a miss, and its route runs.
   */
  const refreshable = (req: Request) => req.method === 'GET' || req.method === 'HEAD';
  const usableUntil = (req: Request, rec: Rec) => (refreshable(req) ? rec.swrUntil : rec.freshUntil);

  /** The first pass answers from the entry or fills it with this request's answer: this one goes on. */
  function reachedTwice(next: NextFunction, key: string): void {
    event('reached-twice', key);
    warnPassedTwice('ERK_CACHE_TWICE', 'cacheResponse', 'entry');
    next();
  }

  function bypass(res: Response, next: NextFunction, key: string, reason: string): void {
    res.setHeader('X-Cache', 'BYPASS');
    event('bypass', key, { reason });
    next();
  }

  /**
   * Redis cannot answer: the route does. Should it fail too, the stale copy L1 still holds within
   * `staleIfError` answers instead, as `cache.wrap()` does: that is when the copy matters most.
   */
  function redisDown(req: Request, res: Response, next: NextFunction, key: string, redisKey: string): void {
    const copy = deafCopy(req, key, Date.now());
    if (copy) {
      serveEntry(req, res, copy, key, redisKey, 'l1-hit');
      return;
    }
    res.setHeader('X-Cache', 'BYPASS');
    event('bypass', key, { reason: 'redis' });
    const stale = staleInL1(req, key, Date.now());
    if (stale) answerStaleOnServerError(req, res, key, stale);
    next();
  }

  /**
   * Redis did not answer: what a deaf L1 (not read before Redis while its invalidation channel is
   * down) holds is still the fail mode's answer, as an L1 that hears would have given it.
   */
  function deafCopy(req: Request, key: string, now: number): Rec | undefined {
    if (!l1?.isDeaf) return undefined;
    const rec = l1Lookup(l1, key, req.headers, now, true);
    return rec && now < usableUntil(req, rec) ? rec : undefined;
  }

  /** The copy L1 holds that stale-if-error may still answer with, when Redis cannot say more. */
  const staleInL1 = (req: Request, key: string, now: number): Rec | undefined =>
    l1 && o.sieMs > 0 ? staleIfErrorOf(o, l1Lookup(l1, key, req.headers, now, true), now) : undefined;

  /** The route answers, watched only (nothing copied): a 5xx of its gets `stale` instead. */
  function answerStaleOnServerError(req: Request, res: Response, key: string, stale: Rec): void {
    captureResponse(
      res,
      {
        maxBodySize: 0,
        statuses: o.statuses,
        ifNoneMatch: undefined,
        observeOnly: true,
        onServerError: answerStaleOnError(ctx, req, res, stale, key),
      },
      () => {},
    );
  }

  async function miss(req: Request, res: Response, next: NextFunction, key: string, redisKey: string) {
    // The client wants no origin call (RFC 9111 §5.2.1.7): neither run it nor wait for one.
    if (onlyIfCached(req)) return lookupOnly(req, res, next, key, redisKey, true);
    // A fill that an invalidation overtook ends in `retry` (its store was dropped), and whoever
    // waited on it looks up afresh: see fill().
    const pending = flights.pending(key);
    if (pending) {
      // Past the wait (a stuck origin), straight to the origin, as a waiter in another process would.
      const result = await flights.wait(pending.flight);
      // An invalidation heard since that lookup started reaches its result: look up afresh.
      const overtaken = 'rec' in result && cache.invalidatedSince(pending.heard, result.rec);
      if ('rec' in result && !overtaken && sameVariant(result.rec, result.headers, req.headers)) {
        const now = Date.now();
        const fresh = now < result.rec.freshUntil;
        return serve(req, res, result.rec, fresh ? 'HIT' : 'STALE', now, fresh ? 'hit' : 'stale', key);
      }
      if ('bypass' in result) return redisDown(req, res, next, key, redisKey);
      if ('uncacheable' in result) {
        // Not storable for the leader, likely not for us either: straight to the origin, no queueing.
        res.setHeader('X-Cache', 'MISS');
        return next();
      }
      // Another variant than ours, or the fill failed: this request looks up (and queues) on its own,
      // so a failing origin still sees one request at a time, not every coalesced one at once.
    }
    // A HEAD has no body to store; a request with `Cache-Control: no-store` forbids storing the
    // answer to it (RFC 9111 §5.2.1.5). Both are still answered from an entry there is.
    if (req.method === 'HEAD' || forbidsStore(req)) return lookupOnly(req, res, next, key, redisKey);
    const settle = pending ? noFlight : flights.start(key);
    // Read before the lookup: an invalidation while it is in flight must keep its answer out of L1.
    const heard = cache.heard;
    const acquired = await cache.acquire(redisKey, req.headers, refreshable(req));
    if (acquired.kind === 'bypass') {
      settle({ bypass: true });
      return redisDown(req, res, next, key, redisKey);
    }
    if (acquired.kind === 'hit') {
      const { rec } = acquired;
      settle({ rec, headers: req.headers });
      if (l1) l1Put(l1, key, rec, req.headers, heard);
      return serveEntry(req, res, rec, key, redisKey, 'hit');
    }
    fill(ctx, req, res, next, key, redisKey, acquired, settle, heard);
  }

  /**
   * A request that no flight answered and that must not fill (a HEAD, a `no-store` request): it is
   * answered from an entry when there is one, else by the route, whose answer is not stored.
   * `onlyCached`: the request said `only-if-cached`, so a miss gets 504 instead of the route.
   */
  async function lookupOnly(
    req: Request,
    res: Response,
    next: NextFunction,
    key: string,
    redisKey: string,
    onlyCached = false,
  ) {
    const found = await cache.fetch(redisKey, req.headers, '').catch(() => undefined);
    const now = Date.now();
    if (found?.kind === 'hit' && now < usableUntil(req, found.rec))
      return serveEntry(req, res, found.rec, key, redisKey, 'hit');
    const copy = found ? undefined : deafCopy(req, key, now);
    if (copy) return serveEntry(req, res, copy, key, redisKey, 'l1-hit');
    res.setHeader('X-Cache', found ? 'MISS' : 'BYPASS');
    if (onlyCached) {
      return sendProblem(
        res,
        {
          type: problemType('not-cached'),
          title: 'Not cached',
          status: 504,
          detail:
            'The request asked for a cached answer only (Cache-Control: only-if-cached), and none is stored.',
        },
        { 'Cache-Control': 'no-store' },
      );
    }
    // Past staleWhileRevalidate the route answers, but its error gets the stale entry, as a GET's
    // does (from L1 when Redis did not answer); its answer is never copied (a HEAD has no body to store).
    let stale: Rec | undefined;
    if (!found) stale = staleInL1(req, key, now);
    else if (found.kind === 'hit') stale = staleIfErrorOf(o, found.rec, now);
    if (stale) answerStaleOnServerError(req, res, key, stale);
    next();
  }

  /** Serves an entry found in time: HIT while fresh, else STALE and one background refresh. */
  function serveEntry(
    req: Request,
    res: Response,
    rec: Rec,
    key: string,
    redisKey: string,
    hit: 'hit' | 'l1-hit',
  ): void {
    const now = Date.now();
    if (now < rec.freshUntil) {
      serve(req, res, rec, 'HIT', now, hit, key);
      return;
    }
    serve(req, res, rec, 'STALE', now, 'stale', key);
    // A refresh replays the request as a GET, also for a HEAD; one from L1 looks in Redis first.
    if (refreshable(req)) refresh(req, key, redisKey, hit === 'l1-hit');
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
