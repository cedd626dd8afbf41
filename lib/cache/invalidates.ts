import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { optionError } from '../errors';
import type { CacheLogger } from './options';
import type { Cache, InvalidateTarget } from './wrap';

/**
 * Middleware for write routes: once the route answers 2xx, invalidates what `select` returns and
 * only then lets the response finish, so the client's next read cannot see the old entry.
 */
export function invalidatesMiddleware(
  cache: Cache,
  logger: CacheLogger,
  select: (req: Request, res: Response) => string[] | InvalidateTarget,
): RequestHandler {
  if (typeof select !== 'function') throw optionError('invalidates', 'takes a function (req, res) => tags');
  return function cacheInvalidate(req: Request, res: Response, next: NextFunction): void {
    const end = res.end;
    res.end = function (this: Response, ...args: unknown[]) {
      res.end = end;
      if (this.statusCode < 200 || this.statusCode >= 300)
        return (end as (...a: unknown[]) => Response).apply(this, args);
      let target: InvalidateTarget;
      try {
        const selected = select(req, res);
        target = Array.isArray(selected) ? { tags: selected } : selected;
      } catch (error) {
        logger.warn({ error }, 'the invalidates() selector threw; nothing invalidated');
        return (end as (...a: unknown[]) => Response).apply(this, args);
      }
      cache
        .invalidate(target)
        .catch((error) => logger.warn({ error }, 'invalidation failed; entries expire on their TTL'))
        .finally(() => (end as (...a: unknown[]) => Response).apply(this, args));
      return this;
    } as Response['end'];
    next();
  };
}
