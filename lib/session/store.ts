import type { Request } from 'express';
import { type SessionData, Store } from 'express-session';
import type { RedisClient } from '../client';
import { emitKitEvent } from '../events';
import { didNotRun, guarded } from '../guarded';
import { RedisClock } from '../redis-clock';
import { runScript } from '../scripts';
import { newToken } from '../token';
import { bodyOf, endsNow, forgetInRequest, parseSession, sameLifetime, ttlOf } from './data';
import { EndedHere } from './ended-here';
import { IndexClaims } from './index-claims';
import { RequestMarks } from './request-marks';
import { type SaveContext, saveSession } from './save';
import { DESTROY, LOAD, sessionHandle, sessionKey, TOUCH, userIndexKey } from './scripts';
import { removeFromUserIndex, unlistFailed } from './user-index';

export interface StoreSettings {
  redis: RedisClient;
  prefix: string;
  ttlMs: number;
  timeoutMs: number;
  tombstoneMs: number;
  maxSessionsPerUser: number;
  /** Whether a request slides the session's expiry (the cookie is then re-sent with the new one). */
  rolling: boolean;
}

type Callback<T = unknown> = (err?: unknown, value?: T) => void;

/**
 * express-session store over ioredis. Every call runs through `guarded()` (timeout + shared breaker)
 * and errors reach express-session, which hands them to the middleware as a 503 instead of starting
 * a fresh, empty session. The README ("Sessions") says why this replaces connect-redis.
 *
 * Its three parts, each one script per call (scripts.ts):
 * - reading: `get` → `readAndSlide` (LOAD: read, and slide the expiry in the same call);
 * - writing: `set`/`touch` → `save` (SAVE, with a deadline in Redis time: redis-clock.ts; in save.ts) or
 *   `refresh` (TOUCH, the expiry alone);
 * - ending: `destroy` → `remove` (DESTROY leaves a tombstone, then the user index forgets it).
 * The user index claims are index-claims.ts; what each request did with its session is
 * request-marks.ts; sessions this process ended lately are ended-here.ts.
 */
export class KitSessionStore extends Store {
  /** What each request did with its session (read, written, dropped): see request-marks.ts. */
  readonly marks = new RequestMarks();
  private readonly ended: EndedHere;
  private readonly claims: IndexClaims;
  private readonly clock: RedisClock;
  private readonly writing: SaveContext;

  constructor(private readonly settings: StoreSettings) {
    super();
    this.ended = new EndedHere(settings.tombstoneMs);
    this.clock = new RedisClock(settings.redis);
    this.claims = new IndexClaims(
      settings,
      (key, operation) => this.guard(key, operation),
      (handles) => this.noteEnded(handles),
      (handles) => this.unnoteEnded(handles),
    );
    this.writing = {
      settings,
      marks: this.marks,
      claims: this.claims,
      clock: this.clock,
      remove: (sid) => this.remove(sid),
    };
  }

  /** Notes sessions (by handle) this process is ending (see ended-here.ts). */
  noteEnded(handles: readonly string[]): void {
    this.ended.note(handles);
  }

  /** Takes back the notes of sessions whose end Redis refused or never received. */
  unnoteEnded(handles: readonly string[]): void {
    for (const h of handles) this.ended.unnote(h);
  }

  /** Whether this process ended session `sid` since the tombstone window began. */
  endedLately(sid: string): boolean {
    return this.ended.has(sid);
  }

  /** `key`: the Redis key the operation touches (on a Cluster, it picks that node's breaker). */
  private guard<T>(key: string, operation: () => Promise<T>): Promise<T> {
    const { redis, timeoutMs } = this.settings;
    return guarded(redis, operation, { timeoutMs, component: 'session', key });
  }

  get(sid: string, callback: Callback<SessionData | null>): void {
    this.readAndSlide(sid).then(
      (session) => callback(null, session),
      (error) => callback(error),
    );
  }

  /**
   * Reads the session and (rolling) slides its expiry in one script. When that expiry is the one the
   * end of the request would set, the session counts as touched, so an unchanged request costs one
   * round trip.
   */
  private async readAndSlide(sid: string): Promise<SessionData | null> {
    const { redis, prefix, ttlMs, rolling } = this.settings;
    const key = sessionKey(prefix, sid);
    let reply: [number, string?, string?, number?, number?, number?];
    try {
      reply = await this.claims.claiming(key, (token) =>
        runScript<[number, string?, string?, number?, number?, number?]>(
          redis,
          LOAD,
          [key],
          [ttlMs, rolling ? '1' : '', token],
        ),
      );
    } catch (error) {
      // The key holds another Redis type (something else wrote it): as unreadable as a bad value.
      if (!isWrongType(error)) throw error;
      emitKitEvent({ component: 'session', type: 'corrupt', key });
      return null;
    }
    const [refresh, userId, data, ttl = ttlMs, vouchedUntil = 0, now = 0] = reply;
    if (refresh === -1 || !data) return null;
    this.clock.note(key, now);
    const parsed = parseSession(data);
    if (!parsed) {
      // A value we cannot read is treated as no session rather than a 500 on every request.
      emitKitEvent({ component: 'session', type: 'corrupt', key });
      return null;
    }
    if (refresh === 1) await this.claims.index(key, String(userId), sid, ttl, vouchedUntil);
    const own = parsed.cookie.originalMaxAge;
    // Without rolling nothing is slid, so the end of the request has nothing to touch either.
    if (!rolling || typeof own !== 'number' || own <= 0 || sameLifetime(own, ttl)) {
      this.marks.noteTouchedOnLoad(parsed);
    }
    return parsed;
  }

  set(sid: string, session: SessionData, callback?: Callback): void {
    if (this.marks.isPersisted(session) || this.lifetimeOnlyUnsent(sid, session)) {
      callback?.();
      return;
    }
    // Marked, so a handler's own `req.session.save()` (before a redirect) is not written again at
    // the end of the request.
    this.save(sid, session).then(
      () => {
        this.marks.markPersisted(session);
        callback?.();
      },
      (error) => callback?.(error),
    );
  }

  /**
   * An explicit `save()` of a loaded session whose only change is its lifetime, without rolling:
   * express-session sends no cookie for it, so the key must keep its expiry too. It sends one when
   * the data differs from what was read (not from a `save()` earlier in the request), and then the
   * new lifetime must reach Redis; data that a `save()` earlier in the request changed, and that is
   * back as it was read, must be written even though no cookie goes out.
   */
  private lifetimeOnlyUnsent(sid: string, session: SessionData): boolean {
    if (this.settings.rolling) return false;
    const req = (session as { req?: Request }).req;
    if (!this.marks.loadedAs(req, sid)) return false;
    const body = bodyOf(session);
    const written = this.marks.writtenAs(session);
    return this.marks.loadedBody(session) === body && (written === undefined || written.body === body);
  }

  override touch(sid: string, session: SessionData, callback?: Callback): void {
    // `isPersisted`, not "touched at all": a lifetime set by a streaming handler ("remember me")
    // still has to reach Redis. Without rolling the cookie keeps its expiry, and so does the key.
    if (!this.settings.rolling || this.marks.isPersisted(session)) {
      callback?.();
      return;
    }
    // Read or written in this request, and the data is the same (else express-session would call
    // set()): the lifetime changed, and it lives in the stored cookie, so the data is rewritten.
    const work = this.marks.wasWritten(session)
      ? this.save(sid, session).then(() => {})
      : this.refresh(sid, session);
    work.then(
      () => callback?.(),
      (error) => callback?.(error),
    );
  }

  destroy(sid: string, callback?: Callback): void {
    this.remove(sid).then(
      () => callback?.(),
      (error) => callback?.(error),
    );
  }

  override createSession(req: Request, data: SessionData) {
    this.marks.noteLoaded(req);
    const touched = this.marks.touchedOnLoad(data);
    const session = super.createSession(req, data);
    this.marks.noteLoadedBody(session, bodyOf(session));
    if (touched) this.marks.markPersisted(session);
    return session;
  }

  /** Whether requests slide the session's expiry (and re-send its cookie). */
  get rolling(): boolean {
    return this.settings.rolling;
  }

  /** Writes the session; `false` when it had been destroyed meanwhile (the write is dropped). */
  save(sid: string, session: SessionData): Promise<boolean> {
    return saveSession(this.writing, sid, session);
  }

  /** Extends the session's TTL without rewriting its data; a vanished session is left vanished. */
  async refresh(sid: string, session: SessionData): Promise<void> {
    if (endsNow(session)) return this.remove(sid);
    const { redis, prefix } = this.settings;
    const ttl = ttlOf(session, this.settings.ttlMs);
    const key = sessionKey(prefix, sid);
    const [refresh, userId, vouchedUntil] = await this.claims.claiming(key, (token) =>
      runScript<[number, string, number?]>(redis, TOUCH, [key], [ttl, token]),
    );
    if (refresh === -1) forgetInRequest(session);
    if (refresh === 1) await this.claims.index(key, String(userId), sid, ttl, vouchedUntil);
  }

  /**
   * Ends a session. `forLogin`: a login is replacing it, so Redis must refuse the end under OOM
   * rather than let it pass and then refuse the new session (see DESTROY).
   */
  async remove(sid: string, { forLogin = false } = {}): Promise<void> {
    const { redis, prefix, tombstoneMs } = this.settings;
    const key = sessionKey(prefix, sid);
    const handle = sessionHandle(sid);
    this.ended.note([handle]);
    let owner: string | null;
    try {
      owner = await this.guard(key, () =>
        runScript<string | null>(
          redis,
          DESTROY,
          [key],
          [tombstoneMs, '', forLogin ? '1' : '', '', newToken()],
        ),
      );
    } catch (error) {
      // Refused or never sent, the session lives on: its requests must go on re-sending its cookie.
      // (A timeout may have ended it, so that one stays noted.)
      if (didNotRun(error)) this.ended.unnote(handle);
      throw error;
    }
    if (!owner) return;
    // The session has ended: what is left is its listing, which list() and logoutAll() tell from a
    // live one. On a Cluster the index may live on a node that is down while the session's was not;
    // that must not report the logout as failed.
    await this.guard(userIndexKey(prefix, String(owner)), () =>
      removeFromUserIndex(redis, prefix, String(owner), [sessionHandle(sid)]),
    ).catch(unlistFailed);
  }
}

function isWrongType(error: unknown): boolean {
  return error instanceof Error && /\bWRONGTYPE\b/.test(error.message);
}
