import type { Request } from 'express';
import type { SessionData } from 'express-session';
import { RedisTimeoutError } from '../errors';
import { emitKitEvent } from '../events';
import { clientTimeoutMs } from '../guarded';
import type { RedisClock } from '../redis-clock';
import { runScript } from '../scripts';
import { endsNow, ttlOf, userIdOf } from './data';
import type { IndexClaims } from './index-claims';
import type { RequestMarks } from './request-marks';
import { SAVE, sessionKey } from './scripts';
import type { StoreSettings } from './store';

// The store's write: one SAVE script, with the user index listed first when the write makes the
// session someone's, and the per-user cap once it is written (store.ts calls it for set and touch).

const MAX_USER_AGENT = 256;

/** What a write needs of the store. */
export interface SaveContext {
  settings: StoreSettings;
  marks: RequestMarks;
  claims: IndexClaims;
  clock: RedisClock;
  /** Ends the session (a handler set its lifetime to 0 or less). */
  remove(sid: string): Promise<void>;
}

/** Writes the session; `false` when it had been destroyed meanwhile (the write is dropped). */
export async function saveSession(ctx: SaveContext, sid: string, session: SessionData): Promise<boolean> {
  if (endsNow(session)) {
    await ctx.remove(sid);
    return true;
  }
  const { redis, prefix } = ctx.settings;
  const ttl = ttlOf(session, ctx.settings.ttlMs);
  const userId = userIdOf(session);
  const req = (session as { req?: Request }).req;
  const userAgent = (req?.headers?.['user-agent'] ?? '').slice(0, MAX_USER_AGENT);
  const key = sessionKey(prefix, sid);
  // A session read from Redis must still be there to be written: a slow request that outlived a
  // logout (and its tombstone) must not bring it back. Only a new id (a login) may create a key.
  // So must one written earlier in this request (a login's, given a "remember me" maxAge after):
  // its second write is an update, not a second login (no second count, no second cap).
  const mustExist = ctx.marks.loadedAs(req, sid) || ctx.marks.wasWritten(session) ? '1' : '';
  const data = JSON.stringify(session);
  // A login's new session is listed before it exists: a logoutAll() meanwhile then finds (and
  // tombstones) it, and a write whose reply was lost and that ioredis sent again, which finds its
  // own index claim and answers "indexed already", cannot leave it unlisted.
  const creating = mustExist === '' && userId !== '';
  // So is a session that becomes this user's by this write: passport's login saves the session,
  // then the app sets `userId` on it; an app may switch the user of a loaded one. Written first, a
  // logoutAll() between the write and the listing would miss it.
  if (creating || (userId !== '' && ownerBefore(ctx.marks, session) !== userId)) {
    await ctx.claims.list(key, userId, sid, ttl);
  }
  // A write that comes after the store gave up on it (a 503 went out, and the client may retry the
  // change) must not apply: Redis refuses it past the moment this wait ends.
  // The wait ends at the store's timeout, or sooner at the client's own commandTimeout.
  const waitMs = Math.min(ctx.settings.timeoutMs, clientTimeoutMs(redis) ?? Number.POSITIVE_INFINITY);
  const deadline = ctx.clock.deadline(key, waitMs) ?? '';
  const [refresh, now, vouchedUntil] = await ctx.claims.claiming(key, (token) =>
    runScript<[number, number, number?]>(
      redis,
      SAVE,
      [key],
      [data, ttl, userId, userAgent, mustExist, token, deadline],
    ),
  );
  ctx.clock.note(key, now);
  if (refresh === -2) throw new RedisTimeoutError(ctx.settings.timeoutMs);
  if (refresh === -1) {
    emitKitEvent({ component: 'session', type: 'late-write-dropped' });
    // Kept in the request, only marked: a handler's own `req.session.save(cb)` (passport's logout
    // calls `req.session.regenerate()` in it) must still find a session there. Its end then sends
    // no cookie for it and writes nothing (see commit.ts).
    ctx.marks.markDropped(session);
    return false;
  }
  // The cap only once the session is written: see evictSessions.
  if (creating) await ctx.claims.cap(userId, sid, undefined, now);
  else if (refresh === 1) await ctx.claims.index(key, userId, sid, ttl, vouchedUntil);
  return true;
}

/** The user the session belonged to as written (or read) last in this request; undefined if unknown. */
function ownerBefore(marks: RequestMarks, session: SessionData): string | undefined {
  const body = marks.writtenAs(session)?.body ?? marks.loadedBody(session);
  if (body === undefined) return undefined;
  try {
    return userIdOf(JSON.parse(body) as SessionData);
  } catch {
    return undefined;
  }
}
