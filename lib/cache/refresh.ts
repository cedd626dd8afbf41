import { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Writable } from 'node:stream';
import type { Request } from 'express';

/** Marks the synthetic request of a background refresh, and carries its fill lock. */
// Symbol.for: another copy of the kit (see version.ts) must see it too, e.g. its rateLimit, which
// lets a background refresh through uncounted.
export const REFRESH: unique symbol = Symbol.for('express-redis-kit.cache.refresh');

declare global {
  namespace Express {
    interface Request {
      /**
       * Set (truthy) on the request a `cacheResponse` background refresh replays through the app
       * (exported as `CACHE_REFRESH`): middleware in front can let it through, as `rateLimit` does.
       */
      readonly [REFRESH]?: unknown;
    }
  }
}

export interface RefreshTicket {
  token: string;
  /** Redis time the lock was taken at: the refresh's store checks its tags against it. */
  since: number;
  /** Called once the refresh stored (or gave up on) its response. */
  done: () => void;
  /** The entry being refreshed: only the cache middleware of that key takes the refresh over. */
  redisKey: string;
  /**
   * The revalidator (one per cacheResponse middleware) that started the refresh: another middleware
   * of the same key (one shared cache, other options) passes the replay on.
   */
  owner: unknown;
  /** Set by {@link claim}. */
  claimed?: boolean;
  /**
   * Called by the cache middleware that takes the refresh over: from then on it renews and releases
   * the lock itself (two renewals would each report its loss). False once the refresh is over (its
   * deadline passed, the lock released): nothing is left to take over.
   */
  claim: () => boolean;
}

type Handle = (req: IncomingMessage, res: ServerResponse, callback: (error?: unknown) => void) => void;
interface AppLike {
  handle?: Handle;
  parent?: AppLike;
}

/**
 * Runs a stale-while-revalidate refresh: a synthetic GET with the original URL and headers (minus
 * conditional ones) goes through the app from the top, and its response lands in a ServerResponse
 * that no socket ever sees. Middleware in front of the cache therefore runs for it too; it can tell
 * such a request by `req[REFRESH]` (exported as `CACHE_REFRESH`). Returns false when there is no
 * Express app to replay through.
 */
export function replay(
  req: Request,
  ticket: RefreshTicket,
  deadlineMs: number,
  onError: (error: unknown) => void,
): boolean {
  let app = (req as { app?: AppLike }).app;
  if (!app || typeof app.handle !== 'function') return false;
  while (app.parent && typeof app.parent.handle === 'function') app = app.parent;
  const handle = app.handle as Handle;
  const fake = new IncomingMessage(req.socket as Socket);
  fake.method = 'GET';
  fake.url = req.originalUrl ?? req.url;
  fake.httpVersionMajor = req.httpVersionMajor;
  fake.httpVersionMinor = req.httpVersionMinor;
  fake.httpVersion = req.httpVersion;
  const headers = { ...req.headers };
  delete headers['if-none-match'];
  delete headers['if-modified-since'];
  delete headers.range;
  fake.headers = headers;
  fake.rawHeaders = [];
  fake.complete = true;
  fake.push(null);
  (fake as unknown as Record<symbol, RefreshTicket>)[REFRESH] = ticket;
  const res = new ServerResponse(fake);
  // Without a socket, a ServerResponse keeps every byte and reports backpressure past 16 KiB with a
  // 'drain' that never comes: a piped body (res.sendFile, stream.pipe) would stall for good. The
  // cache copies what the route writes before it reaches here, so the wire bytes can go nowhere.
  const sink = new Writable({ highWaterMark: Number.MAX_SAFE_INTEGER, write: (_c, _e, cb) => cb() });
  res.assignSocket(sink as Socket);
  let over = false;
  // 'close' tells the cache's response tee that nothing more comes: it lets go of the fill lock.
  const end = (error?: unknown) => {
    if (error) onError(error);
    if (over) return;
    over = true;
    clearTimeout(deadline);
    if (!res.writableFinished) res.emit('close');
    ticket.done();
  };
  // res.destroy(error) (stream.pipeline does so when its source fails) destroys the socket with it:
  // a real request's socket has the HTTP server's listener, this one needs its own or the 'error'
  // is thrown and takes the process down.
  sink.on('error', (error) => end(error));
  // Answered: the cache's tee stores it and calls ticket.done() itself. Answered before it (a
  // middleware in front: auth, a redirect, a maintenance switch): nothing will, so this does.
  res.once('finish', () => {
    over = true;
    clearTimeout(deadline);
    if (!ticket.claimed) ticket.done();
  });
  // No client ever hangs up on this request: a route that never answers would otherwise hold the
  // fill lock (kept alive while it runs) for good, and every miss of the key would wait for it.
  const deadline = setTimeout(
    () => end(new Error(`the route did not answer the background refresh within ${deadlineMs} ms`)),
    deadlineMs,
  );
  deadline.unref?.();
  try {
    // The chain ended without an answer (no route, or an error): nothing to store.
    handle.call(app, fake, res, (error?: unknown) => end(error));
  } catch (error) {
    end(error);
  }
  return true;
}

export function refreshTicketOf(req: Request): RefreshTicket | undefined {
  return (req as unknown as Record<symbol, RefreshTicket | undefined>)[REFRESH];
}
