import type { OutgoingHttpHeaders } from 'node:http';
import type { NextFunction, Request, Response } from 'express';
import { onResponseOver } from '../connection-close';
import { withoutQuery } from '../mask-url';
import { beginWork } from '../pending-work';
import { type Captured, type CaptureOptions, captureResponse } from './capture';
import type { FillLease } from './core';
import type { Entry } from './entry';
import type { FillVary } from './fill-store';
import type { Settle } from './flights';
import { refusal, removedHeaders, storedHeaders } from './http';
import { headerValue } from './key';
import { type Rec, toRec } from './l1';
import type { ResolvedResponseOptions } from './options';
import { respondInstead } from './respond';
import { tagsReturned } from './targets';
import { l1Put, varyOf } from './vary';
import type { Cache } from './wrap';

/** What a `cacheResponse()` fill needs of the middleware it runs for. */
export interface FillContext {
  readonly o: ResolvedResponseOptions;
  readonly cache: Cache;
  /** The TTL spread for this middleware's entries. */
  readonly jitter: number;
  event(type: string, key: string, details?: Record<string, unknown>): void;
}

/** For a route's own 304: whether anything but its status keeps it from the cache. */
const NOT_MODIFIED: ReadonlySet<number> = new Set([304]);

/** `rec`, when stale-if-error may still answer with it. */
export function staleIfErrorOf(
  o: ResolvedResponseOptions,
  rec: Rec | undefined,
  now: number,
): Rec | undefined {
  return rec && o.sieMs > 0 && now < rec.expiresAt ? rec : undefined;
}

/**
 * stale-if-error for a response about to run: should the origin fail before sending anything, the
 * stale entry answers instead, without the headers the route had set (`before`: those it had not).
 */
export function answerStaleOnError(
  ctx: FillContext,
  req: Request,
  res: Response,
  rec: Rec,
  key: string,
): NonNullable<CaptureOptions['onServerError']> {
  const before = res.getHeaders();
  return (originals) => {
    ctx.event('stale-if-error', key);
    return respondInstead(req, res, rec, before, originals);
  };
}

/** Runs the origin, teeing its response into the cache; `settle` ends the flight of requests waiting on it. */
export function fill(
  ctx: FillContext,
  req: Request,
  res: Response,
  next: NextFunction,
  key: string,
  redisKey: string,
  lease: FillLease,
  settle: Settle,
  heardBefore?: number,
): void {
  const { o, cache } = ctx;
  const { l1 } = cache;
  const { logger } = cache.options;
  const { token, since, marker } = lease;
  const before = res.getHeaders();
  const heard = heardBefore ?? cache.heard;
  const stop = cache.holdLock(redisKey, token);
  // Until its lock is released or its entry stored: closeRedis waits for it.
  const endWork = beginWork(cache.redis);
  const fallback = staleIfErrorOf(o, lease.stale, Date.now());
  const staleAnswer = fallback ? answerStaleOnError(ctx, req, res, fallback, key) : undefined;
  res.setHeader('X-Cache', 'MISS');
  ctx.event('miss', key);
  captureResponse(
    res,
    {
      maxBodySize: o.maxBodySize,
      statuses: o.statuses,
      // A 304 only for GET (RFC 9110 §13.1.2): a POST that ran must not lose its answer to one.
      ifNoneMatch: req.method === 'GET' ? req.headers['if-none-match'] : undefined,
      // Not an entry an invalidation heard since reached (it was deleted while the route ran).
      onServerError:
        staleAnswer && fallback
          ? (originals) => !cache.invalidatedSince(heard, fallback) && staleAnswer(originals)
          : undefined,
    },
    (captured, reason) => {
      stop();
      // What it sends now (a release) is a call of its own, counted while in flight; a store, or a
      // release that waits for the response to be over, is counted until then.
      let later = false;
      try {
        later = end(captured, reason);
      } finally {
        if (!later) endWork();
      }
    },
  );
  next();

  /** Ends the fill: stores its answer or releases the lock; true when it calls endWork itself, later. */
  function end(captured: Captured | undefined, reason: string | undefined): boolean {
    let entry: Entry | undefined;
    let threw = false;
    try {
      entry =
        captured && (!o.shouldCache || o.shouldCache(req, res))
          ? toEntry(ctx, req, res, captured, before)
          : undefined;
    } catch (error) {
      logger.warn(
        { key: redisKey, path: withoutQuery(req.originalUrl), err: error },
        'the tags or shouldCache option threw; response not cached',
      );
      threw = true;
    }
    if (!entry && reason === 'stale-if-error' && fallback) {
      // The origin is failing: requests coalesced behind this one get the same stale answer.
      cache.releaseFill(redisKey, token);
      settle({ rec: fallback, headers: req.headers });
      return false;
    }
    if (!entry) {
      ctx.event('uncacheable', key, { reason: reason ?? (threw ? 'option-threw' : 'shouldCache') });
      const release = () => releaseUncacheable(cache, res, redisKey, token, reason, settle);
      // A 304 is judged by its headers as they went out: express-session in front adds its
      // Set-Cookie inside writeHead, after this is first known.
      if (res.statusCode === 304 && !res.headersSent) {
        onResponseOver(res, () => {
          try {
            release();
          } finally {
            endWork();
          }
        });
        return true;
      }
      release();
      return false;
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
              generation: generationOf(marker, names),
            }
          : undefined;
    } catch (error) {
      // Runs from the response's end: a throw would strand the requests coalesced behind this one.
      logger.warn(
        { key: redisKey, path: withoutQuery(req.originalUrl), err: error },
        'could not prepare the response for the cache; not cached',
      );
      cache.releaseFill(redisKey, token);
      settle({ retry: true });
      return false;
    }
    // Requests coalesced behind this one get its answer once it is stored: when an invalidation
    // (from any instance) took the lock while the origin ran, they look up again instead, since
    // the answer may be older than the write behind it; nor does it go into L1. Requests that
    // come after this answer do not join any more: they look up on their own, as before.
    settle.close?.();
    void cache.store(redisKey, entry, token, vary, since).then((outcome) => {
      endWork();
      if (outcome === 'dropped') return settle({ retry: true });
      if (l1) l1Put(l1, key, rec, req.headers, heard);
      settle({ rec, headers: req.headers });
    });
    return true;
  }
}

/**
 * The generation the store will file this variant under, for the tags to take it in the same call:
 * the marker's when it has these names; a fresh one (null) when there was none or it has others (the
 * store replaces it); unknown when the fill did not look (a background refresh).
 */
function generationOf(marker: FillLease['marker'], names: readonly string[]): string | null | undefined {
  if (marker === undefined) return undefined;
  return marker !== null && marker.names === names.join(',') ? marker.generation : null;
}

/**
 * Ends a fill whose answer is not stored. An aborted response or a server error says nothing about
 * the next one, and a failing origin needs the lock's one-at-a-time protection most: the waiters
 * look up again. Nor does a 304 the route answered a conditional request with (Express does so
 * itself for If-Modified-Since), unless more than its status refuses it (Set-Cookie, private…): the
 * next client without that validator gets a body to store. Any other refusal (404, Set-Cookie, too
 * large…) likely repeats, so other misses need not queue for it: the no-store marker says so.
 */
function releaseUncacheable(
  cache: Cache,
  res: Response,
  redisKey: string,
  token: string,
  reason: string | undefined,
  settle: Settle,
): void {
  if (
    reason === 'aborted' ||
    reason === 'server-error' ||
    res.statusCode >= 500 ||
    (res.statusCode === 304 && refusal(res, 304, NOT_MODIFIED) === undefined)
  ) {
    cache.releaseFill(redisKey, token);
    settle({ retry: true });
    return;
  }
  cache.releaseUncacheable(redisKey, token);
  settle({ uncacheable: true });
}

function toEntry(
  ctx: FillContext,
  req: Request,
  res: Response,
  captured: Captured,
  before: OutgoingHttpHeaders,
): Entry {
  const { o, cache } = ctx;
  const freshMs = cache.jittered(o.ttlMs, ctx.jitter);
  return {
    status: captured.status,
    ...(captured.message ? { message: captured.message } : {}),
    headers: storedHeaders(captured.headers, before),
    body: captured.body,
    etag: captured.etag,
    createdAt: Date.now(),
    ttlMs: freshMs + o.swrMs + o.sieMs,
    freshMs,
    swrMs: o.swrMs,
    sieMs: o.sieMs,
    tags: o.tags ? tagsReturned(o.tags(req, res)) : [],
    negative: 0,
    originAge: ageOf(captured.headers.age),
    removed: removedHeaders(captured.headers, before),
  };
}

/** A response's `Age` (delta-seconds, RFC 9111 §5.1); undefined when absent or malformed. */
function ageOf(age: OutgoingHttpHeaders[string]): number | undefined {
  const value = Array.isArray(age) ? age[0] : age;
  const text = typeof value === 'number' ? String(value) : value;
  if (text === undefined || !/^\s*\d+\s*$/.test(text)) return undefined;
  // As RFC 9111 §1.2.2 caps delta-seconds: 2^31, "infinitely old".
  return Math.min(Number(text), 2 ** 31);
}
