import type { Request } from 'express';
import type { SessionData } from 'express-session';
import { hasShape, type Shape, shapeOf } from './data';

/**
 * What the store did with each request's session during that request, so the end of the request
 * (commit.ts) neither pays a second round trip for work done nor re-sends a cookie it must not.
 * Keyed weakly by the request or the session object: nothing outlives the request.
 */
export class RequestMarks {
  /** Sessions already saved or touched during this request, with the data as written. */
  private readonly persisted = new WeakMap<object, Shape>();
  /** Request → the session id read from Redis for it, and when. */
  private readonly loaded = new WeakMap<object, { sid: string; at: number }>();
  /** Session data whose expiry the read already slid (or, without rolling, must not slide). */
  private readonly touched = new WeakSet<object>();
  /** A session read from Redis → its data as read (express-session's "modified" compares with it). */
  private readonly loadedBodies = new WeakMap<object, string>();
  /** Sessions whose write found them ended (a logout elsewhere): they are dead. */
  private readonly dropped = new WeakSet<object>();

  noteLoaded(req: Request): void {
    // Monotonic: it measures how long the request has run.
    this.loaded.set(req, { sid: req.sessionID, at: performance.now() });
  }

  /**
   * Whether `req` read its session more than `ms` ago: long enough for a login or logout in another
   * tab to have ended it meanwhile.
   */
  loadedBefore(req: Request, ms: number): boolean {
    const at = this.loaded.get(req)?.at;
    return at !== undefined && performance.now() - at > ms;
  }

  /** Whether `sid` is the session that was read from Redis for `req` (not one generated since). */
  loadedAs(req: Request | undefined, sid: string): boolean {
    return req !== undefined && this.loaded.get(req)?.sid === sid;
  }

  noteLoadedBody(session: SessionData, body: string): void {
    this.loadedBodies.set(session, body);
  }

  /** The data of `session` as it was read from Redis, if it was. */
  loadedBody(session: SessionData): string | undefined {
    return this.loadedBodies.get(session);
  }

  noteTouchedOnLoad(data: SessionData): void {
    this.touched.add(data);
  }

  touchedOnLoad(data: SessionData): boolean {
    return this.touched.has(data);
  }

  /** Marks a session as already written (or touched) during this request. */
  markPersisted(session: SessionData): void {
    this.persisted.set(session, shapeOf(session));
  }

  /** Whether the session is in Redis as it is now (written or touched in this request, unchanged since). */
  isPersisted(session: SessionData): boolean {
    const written = this.persisted.get(session);
    return written !== undefined && hasShape(session, written);
  }

  /** Whether the session was written (or touched) in Redis during this request, in any version. */
  wasWritten(session: SessionData): boolean {
    return this.persisted.has(session);
  }

  /** The data as last written in this request, if it was. */
  writtenAs(session: SessionData): Shape | undefined {
    return this.persisted.get(session);
  }

  markDropped(session: SessionData): void {
    this.dropped.add(session);
  }

  wasDropped(session: SessionData): boolean {
    return this.dropped.has(session);
  }
}
