import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { refusedChunkError } from '../chunks';
import { MAX_TIMER_MS } from '../duration';
import { optionError } from '../errors';
import { holdAnswer } from '../late-answers';
import { OutageTracker } from '../outage';
import { type InvalidateTarget, selectedTarget } from './targets';
import type { CacheLogger } from './types';
import type { Cache } from './wrap';

/**
 * The hold's bound, in the cache's `timeout`s. An invalidation is up to four round trips in a row
 * (stamp the keys, take the tag sets, unlink, publish): on a healthy Redis they fit well within it;
 * past it (Redis slow) the answer goes out and the rest goes on behind it.
 */
const HOLD_ROUND_TRIPS = 3;

/**
 * Middleware for write routes: once the route answers 2xx or 303 (See Other: the redirect after a
 * successful form post), invalidates what `select` returns and only then lets the response finish,
 * so the client's next read cannot see the old entry. The wait is bounded by three times the cache's
 * `timeout`: past that (Redis slow or down) the response goes out and the invalidation goes on
 * behind it.
 */
export function invalidatesMiddleware(
  cache: Cache,
  logger: CacheLogger,
  select: (req: Request, res: Response) => string | string[] | InvalidateTarget,
): RequestHandler {
  if (typeof select !== 'function') throw optionError('invalidates', 'takes a function (req, res) => tags');
  return function cacheInvalidate(req: Request, res: Response, next: NextFunction): void {
    const end = res.end as (...a: unknown[]) => Response;
    res.end = function (this: Response, ...args: unknown[]) {
      res.end = end as Response['end'];
      // A chunk Node refuses makes its end() throw: it must throw now, inside the route, so Express's
      // error handler answers as it would without the kit; deferred, nobody could catch it.
      // Not other redirects: a login guard's 302 to /login answers a write that never happened, and
      // anonymous clients could empty chosen tags at will.
      const succeeded = (this.statusCode >= 200 && this.statusCode < 300) || this.statusCode === 303;
      if (!succeeded || refusedChunkError(args[0])) {
        return end.apply(this, args);
      }
      let target: InvalidateTarget;
      try {
        target = selectedTarget(select(req, res));
      } catch (error) {
        logger.warn(
          { err: error },
          'the invalidates() selector threw or returned no tags/keys; nothing invalidated',
        );
        return end.apply(this, args);
      }
      // While held, the response behaves as sent (lib/late-answers.ts): Express's final handler
      // after `res.status(201).json(); throw` must not answer 500 over the write that happened, nor
      // an idempotency() in front store that 500 and let a retry run the write again.
      const held = holdAnswer(this);
      let ended = false;
      const finish = () => {
        if (ended) return;
        ended = true;
        clearTimeout(timer);
        // A throw here is met by destroying the response: the route has returned, so Express can
        // no longer answer with its error handler.
        held.release(() => end.apply(this, args));
      };
      // A write must not hang on a slow Redis: this instance's L1 is already dropped (invalidate() does
      // that first), and the Redis part finishes in the background.
      const timer = setTimeout(finish, Math.min(HOLD_ROUND_TRIPS * cache.options.timeoutMs, MAX_TIMER_MS));
      const outages = outagesOf(cache);
      cache
        .invalidate(target)
        .then(
          () => {
            outages.end();
          },
          (error) => {
            // Once per outage (each failed call is still a `redis-error` event): during one, every
            // write would log its own line.
            if (outages.begin() === undefined) return;
            logger.warn(
              { err: error },
              `invalidation incomplete (${(error as Error)?.message ?? error}); what it missed expires on its TTL. ` +
                'Logged once per outage, at most once a minute.',
            );
          },
        )
        .then(finish);
      return this;
    } as Response['end'];
    next();
  };
}

const outageTrackers = new WeakMap<Cache, OutageTracker>();

/** One per cache, so the routes that invalidate through it warn once per outage between them. */
function outagesOf(cache: Cache): OutageTracker {
  let tracker = outageTrackers.get(cache);
  if (!tracker) {
    tracker = new OutageTracker(cache.options.redis);
    outageTrackers.set(cache, tracker);
  }
  return tracker;
}
