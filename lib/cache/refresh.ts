import { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Writable } from 'node:stream';
import type { Request } from 'express';

/** Marks the synthetic request of a background refresh, and carries its fill lock. */
export const REFRESH = Symbol('express-redis-kit.cache.refresh');

export interface RefreshTicket {
  token: string;
  /** Called once the refresh stored (or gave up on) its response. */
  done: () => void;
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
export function replay(req: Request, ticket: RefreshTicket, onError: (error: unknown) => void): boolean {
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
  res.assignSocket(
    new Writable({ highWaterMark: Number.MAX_SAFE_INTEGER, write: (_c, _e, cb) => cb() }) as Socket,
  );
  try {
    handle.call(app, fake, res, (error?: unknown) => {
      // The chain ended without an answer (no route, or an error): nothing to store. 'close' tells
      // the cache's response tee to let go of the fill lock.
      if (error) onError(error);
      res.emit('close');
      ticket.done();
    });
  } catch (error) {
    onError(error);
    ticket.done();
  }
  return true;
}

export function refreshTicketOf(req: Request): RefreshTicket | undefined {
  return (req as unknown as Record<symbol, RefreshTicket | undefined>)[REFRESH];
}
