import type { Request } from 'express';
import { type SessionData, Store } from 'express-session';
import { guarded } from '../breaker';
import type { RedisClient } from '../client';
import { emitKitEvent } from '../events';
import { runScript } from '../scripts';
import { DESTROY, LOAD, SAVE, sessionHandle, sessionKey, TOUCH, userIndexKey } from './scripts';
import { addToUserIndex, evictSessions, removeFromUserIndex } from './user-index';

export interface StoreSettings {
  redis: RedisClient;
  prefix: string;
  ttlMs: number;
  timeoutMs: number;
  tombstoneMs: number;
  maxSessionsPerUser: number;
}

type Callback<T = unknown> = (err?: unknown, value?: T) => void;

const MAX_USER_AGENT = 256;

/**
 * express-session store over ioredis. Every call runs through `guarded()` (timeout + shared breaker)
 * and errors reach express-session, which hands them to the middleware as a 503 instead of starting
 * a fresh, empty session. The README ("Sessions") says why this replaces connect-redis.
 */
export class KitSessionStore extends Store {
  /**
   * Sessions already saved or touched during this request, with the data as written, so
   * express-session's own end-of-request save/touch does not pay a second round trip.
   */
  private readonly persisted = new WeakMap<object, string>();
  /** Requests whose session came from Redis (rather than being generated fresh). */
  /** Request → the session id read from Redis for it. */
  private readonly loaded = new WeakMap<object, string>();
  /** Session data whose expiry `readAndSlide()` already slid. */
  private readonly touchedOnLoad = new WeakSet<object>();

  constructor(private readonly settings: StoreSettings) {
    super();
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
   * Reads the session and slides its expiry in one script. When that expiry is the one the end of the
   * request would set, the session counts as touched, so an unchanged request costs one round trip.
   */
  private async readAndSlide(sid: string): Promise<SessionData | null> {
    const { redis, prefix, ttlMs } = this.settings;
    const key = sessionKey(prefix, sid);
    const [refresh, userId, data, ttl = ttlMs] = await this.guard(key, () =>
      runScript<[number, string?, string?, number?]>(redis, LOAD, [key], [ttlMs]),
    );
    if (refresh === -1 || !data) return null;
    let parsed: SessionData;
    try {
      parsed = JSON.parse(data) as SessionData;
    } catch {
      // A value we cannot read is treated as no session rather than a crash on every request.
      emitKitEvent({ component: 'session', type: 'corrupt', key });
      return null;
    }
    if (refresh === 1) await this.index(key, String(userId), sid, ttl);
    const own = parsed.cookie?.originalMaxAge;
    if (typeof own !== 'number' || own <= 0 || Math.ceil(own) === ttl) this.touchedOnLoad.add(parsed);
    return parsed;
  }

  set(sid: string, session: SessionData, callback?: Callback): void {
    if (this.persisted.get(session) === dataOf(session)) {
      callback?.();
      return;
    }
    this.save(sid, session).then(
      () => callback?.(),
      (error) => callback?.(error),
    );
  }

  override touch(sid: string, session: SessionData, callback?: Callback): void {
    if (this.persisted.has(session)) {
      callback?.();
      return;
    }
    this.refresh(sid, session).then(
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
    this.loaded.set(req, req.sessionID);
    const touched = this.touchedOnLoad.has(data);
    const session = super.createSession(req, data);
    if (touched) this.markPersisted(session);
    return session;
  }

  /** Whether this request's session was read from Redis (not generated for it). */
  wasLoaded(req: Request): boolean {
    return this.loaded.has(req);
  }

  /** Whether `sid` is the session that was read from Redis for `req` (not one generated since). */
  private loadedAs(req: Request | undefined, sid: string): boolean {
    return req !== undefined && this.loaded.get(req) === sid;
  }

  /** Marks a session as already written (or touched) during this request. */
  markPersisted(session: SessionData): void {
    this.persisted.set(session, dataOf(session));
  }

  isPersisted(session: SessionData): boolean {
    return this.persisted.get(session) === dataOf(session);
  }

  /** Writes the session; `false` when it had been destroyed meanwhile (the write is dropped). */
  async save(sid: string, session: SessionData): Promise<boolean> {
    const { redis, prefix } = this.settings;
    const ttl = this.ttlOf(session);
    const userId = userIdOf(session);
    const req = (session as { req?: Request }).req;
    const userAgent = (req?.headers?.['user-agent'] ?? '').slice(0, MAX_USER_AGENT);
    const key = sessionKey(prefix, sid);
    // A session read from Redis must still be there to be written: a slow request that outlived a
    // logout (and its tombstone) must not bring it back. Only a new id (a login) may create a key.
    const mustExist = this.loadedAs(req, sid) ? '1' : '';
    const data = JSON.stringify(session);
    const [refresh] = await this.guard(key, () =>
      runScript<[number, number]>(redis, SAVE, [key], [data, ttl, userId, userAgent, mustExist]),
    );
    if (refresh === -1) {
      emitKitEvent({ component: 'session', type: 'late-write-dropped' });
      return false;
    }
    if (refresh === 1) await this.index(key, userId, sid, ttl);
    return true;
  }

  /** Extends the session's TTL without rewriting its data; a vanished session is left vanished. */
  async refresh(sid: string, session: SessionData): Promise<void> {
    const { redis, prefix } = this.settings;
    const ttl = this.ttlOf(session);
    const key = sessionKey(prefix, sid);
    const [refresh, userId] = await this.guard(key, () =>
      runScript<[number, string]>(redis, TOUCH, [key], [ttl]),
    );
    if (refresh === 1) await this.index(key, String(userId), sid, ttl);
  }

  /** Destroys (tombstones) the session and drops it from its user's index. */
  async remove(sid: string): Promise<void> {
    const { redis, prefix, tombstoneMs } = this.settings;
    const key = sessionKey(prefix, sid);
    const owner = await this.guard(key, () =>
      runScript<string | null>(redis, DESTROY, [key], [tombstoneMs, '']),
    );
    if (owner) {
      await this.guard(userIndexKey(prefix, String(owner)), () =>
        removeFromUserIndex(redis, prefix, String(owner), [sessionHandle(sid)]),
      );
    }
  }

  private async index(key: string, userId: string, sid: string, ttl: number): Promise<void> {
    const { redis, prefix, maxSessionsPerUser } = this.settings;
    const cap = Number.isFinite(maxSessionsPerUser) ? maxSessionsPerUser : 0;
    let doomed: string[];
    try {
      doomed = await this.guard(userIndexKey(prefix, userId), () =>
        addToUserIndex(redis, prefix, userId, sessionHandle(sid), 2 * ttl, cap),
      );
    } catch (error) {
      // The session already believes it is indexed; un-believe it so the next request retries, even
      // when only the user index's node is down (Cluster) and this write can still land.
      this.guard(key, () => redis.hdel(key, 'ix')).catch(() => {});
      throw error;
    }
    if (doomed.length === 0) return;
    // The cap is housekeeping: a failure here must not fail the request; the next login retries.
    try {
      const ended = await evictSessions(this.settings, userId, doomed);
      emitKitEvent({ component: 'session', type: 'evicted', sessions: ended });
    } catch (error) {
      emitKitEvent({ component: 'session', type: 'error', error: error as Error });
    }
  }

  private ttlOf(session: SessionData): number {
    const maxAge = session.cookie?.maxAge;
    return typeof maxAge === 'number' && maxAge > 0 ? Math.ceil(maxAge) : this.settings.ttlMs;
  }
}

function userIdOf(session: SessionData): string {
  const userId = (session as { userId?: unknown }).userId;
  return typeof userId === 'string' || typeof userId === 'number' ? String(userId) : '';
}

/**
 * What decides whether a session must be written: its own data and its lifetime (the cookie's
 * `originalMaxAge`, which a handler sets for "remember me"), but not the cookie's expiry, which
 * moves on every touch. Without the lifetime, a `maxAge` set after `login()` (or on a loaded
 * session) would reach the browser but never Redis, and the session would die at the store's ttl.
 */
export function dataOf(session: SessionData): string {
  const { cookie, ...data } = session;
  return `${cookie?.originalMaxAge ?? ''}\n${JSON.stringify(data)}`;
}
