import type { RedisClient } from '../client';
import { emitKitEvent } from '../events';
import { didNotRun, guarded } from '../guarded';
import { runScript } from '../scripts';
import { newToken } from '../token';
import { DESTROY, INDEX_ADD, INDEX_LIST, sessionKeyFromHandle, userIndexKey } from './scripts';

/** One live session of a user, as returned by `sessions.list(userId)`. */
export interface SessionInfo {
  /** Non-reversible handle of the session (a digest of its id): safe to show, useless as a cookie. */
  id: string;
  createdAt: Date;
  lastSeenAt: Date;
  /** User-Agent of the request that created the session (truncated), or `''`. */
  userAgent: string;
}

interface IndexSettings {
  redis: RedisClient;
  prefix: string;
  timeoutMs: number;
  tombstoneMs: number;
  /** Told which sessions (handles) are about to be ended. */
  onEnding?: (handles: readonly string[]) => void;
  /** Told which of those sessions Redis refused or never received the end of. */
  onEndFailed?: (handles: readonly string[]) => void;
  /** Whether requests slide sessions (`rolling`). */
  rolling?: boolean;
}

/** Lists (or keeps listing) a session under its user for `keepMs`; resolves how many entries the index holds. */
export async function addToUserIndex(
  redis: RedisClient,
  prefix: string,
  userId: string,
  handle: string,
  keepMs: number,
): Promise<number> {
  return Number(await runScript<number>(redis, INDEX_ADD, [userIndexKey(prefix, userId)], [handle, keepMs]));
}

export function removeFromUserIndex(
  redis: RedisClient,
  prefix: string,
  userId: string,
  handles: string[],
): Promise<unknown> {
  if (handles.length === 0) return Promise.resolve(0);
  return redis.zrem(userIndexKey(prefix, userId), ...handles);
}

/** `key`: the one key the operation touches, or undefined when it spans slots (Cluster breakers). */
function guard<T>(settings: IndexSettings, key: string | undefined, operation: () => Promise<T>): Promise<T> {
  return guarded(settings.redis, operation, { timeoutMs: settings.timeoutMs, component: 'session', key });
}

function handlesOf(settings: IndexSettings, userId: string): Promise<string[]> {
  const key = userIndexKey(settings.prefix, userId);
  return guard(settings, key, () => runScript<string[]>(settings.redis, INDEX_LIST, [key], []));
}

/**
 * Live sessions of a user, most recently seen first. Index entries can outlive their session (it
 * expired or was destroyed elsewhere), so each is checked against the session itself and stale ones
 * are removed from the index on the way.
 */
export async function listUserSessions(settings: IndexSettings, userId: string): Promise<SessionInfo[]> {
  const { redis, prefix } = settings;
  const handles = await handlesOf(settings, userId);
  if (handles.length === 0) return [];
  // Sessions live in their own slots, so these are separate reads (ioredis pipelines/routes them).
  const rows = await guard(settings, undefined, () =>
    Promise.all(handles.map((h) => redis.hmget(sessionKeyFromHandle(prefix, h), 'u', 'c', 's', 'ua', 'x'))),
  );
  const live: SessionInfo[] = [];
  const stale: string[] = [];
  // Presence is read from `c` (written with the data, in the same script), not the data itself,
  // which may be kilobytes per session.
  rows.forEach(([owner, created, seen, userAgent, tombstone], i) => {
    const id = handles[i]!;
    // No key at all: expired, or a login that listed its session and is about to write it. Left
    // listed (its score retires it): unlisting it now could leave that login's session unlisted.
    if (!owner && !tombstone && !created) return;
    if (owner !== userId || tombstone) {
      stale.push(id);
      return;
    }
    live.push({
      id,
      createdAt: new Date(Number(created)),
      lastSeenAt: new Date(Number(seen ?? created)),
      userAgent: userAgent ?? '',
    });
  });
  if (stale.length) {
    await guard(settings, userIndexKey(prefix, userId), () =>
      removeFromUserIndex(redis, prefix, userId, stale),
    );
  }
  return live.sort((a, b) => b.lastSeenAt.getTime() - a.lastSeenAt.getTime());
}

/** Destroys the given sessions of a user (all of them without `only`); returns how many were live. */
export async function destroyUserSessions(
  settings: IndexSettings,
  userId: string,
  only?: string,
): Promise<number> {
  let handles = await handlesOf(settings, userId);
  if (only !== undefined) handles = handles.filter((h) => h === only);
  if (handles.length === 0) return 0;
  return endSessions(settings, userId, handles);
}

interface Row {
  h: string;
  /** No key at all: expired, or a login listed and not yet written. */
  absent: boolean;
  live: boolean;
  /** When it expires (ms). */
  ends: number;
  /** When its user logged in to it (ms). */
  since: number;
  /** Its last-seen time as read (`s`): its end is skipped if it was used since. */
  seen: string;
}

/**
 * Past `maxSessionsPerUser`: ends the user's live sessions that expire soonest, as many as exceed
 * `cap`, never `keep` (the session just logged in, or one refreshing its index entry) and never one
 * that logged in after `keep`: of logins racing past the cap, the later ends the earlier, not each
 * the other. Only `keep` and the sessions before it count, so each login of a race trims to the cap
 * what came before it and the latest one trims the rest. Called once `keep` is written, so that
 * latest login, checking after its own write, finds every earlier one written too. `keepSince`:
 * when `keep` logged in, when the caller knows (a login: its write's reply), so a replica behind
 * (`scaleReads`) that does not have it yet still lets the cap run. Index entries outlive their
 * sessions, so each is checked first: entries of ended sessions (tombstone) are unlisted, entries
 * without any key are left for their score to retire (one may be a login about to write its
 * session), and neither counts. Sessions go first and their index entries after, so a failure
 * half-way leaves them listed (retried at the next login), never alive but unlisted. Returns how
 * many live sessions were ended.
 */
export async function evictSessions(
  settings: IndexSettings,
  userId: string,
  keep: string,
  cap: number,
  keepSince?: number,
): Promise<number> {
  const { redis, prefix } = settings;
  const handles = await handlesOf(settings, userId);
  const readAt = Date.now();
  const rows: Row[] = await guard(settings, undefined, () =>
    Promise.all(
      handles.map(async (h) => {
        const key = sessionKeyFromHandle(prefix, h);
        const [[owner, tombstone, created, loggedIn, seen, lifetime], left] = await Promise.all([
          redis.hmget(key, 'u', 'x', 'c', 'li', 's', 't'),
          redis.pttl(key),
        ]);
        const absent = !owner && !tombstone && !created;
        // Sessions written by an earlier version have no `li`: their creation comes before it.
        const since = Number(loggedIn ?? created);
        // When it expires. Rolling, every write or slide sets `s` and the expiry at one Redis time,
        // so `s + t` is exact and the same for every login racing past the cap: each then picks the
        // same sessions to end (by PTTL, read a moment apart, they could pick different ones and end
        // more than needed between them). Without rolling a read sets `s` alone: PTTL then.
        const ends = settings.rolling && seen && lifetime ? Number(seen) + Number(lifetime) : readAt + left;
        return { h, absent, live: owner === userId && !tombstone && left > 0, ends, since, seen: seen ?? '' };
      }),
    ),
  );
  const others = rows.filter((r) => r.h !== keep);
  const gone = others.filter((r) => !r.live && !r.absent).map((r) => r.h);
  if (gone.length > 0) {
    await guard(settings, userIndexKey(prefix, userId), () =>
      removeFromUserIndex(redis, prefix, userId, gone),
    );
  }
  let mine = rows.find((r) => r.h === keep);
  if (mine?.absent && keepSince !== undefined) mine = { ...mine, live: true, since: keepSince };
  // A session already ended (a racing later login's cap, a logout) ends nothing in its turn: that
  // later login has trimmed what came before it.
  if (!mine?.live) return 0;
  const me = mine;
  // Ties (one millisecond) go by handle, so both logins of a race agree on which came first.
  const before = others.filter((r) => r.live && (r.since < me.since || (r.since === me.since && r.h < me.h)));
  const surplus = before.length + 1 - cap;
  if (surplus <= 0) return 0;
  const ending = before
    .sort((a, b) => a.ends - b.ends || a.since - b.since || (a.h < b.h ? -1 : 1))
    .slice(0, surplus);
  // Each only if not used since this read: a racing login that read it after would rank it
  // otherwise, and the two would end more than the surplus between them.
  return endSessions(
    settings,
    userId,
    ending.map((r) => r.h),
    ending.map((r) => r.seen),
  );
}

/**
 * Destroys these sessions of the user, then drops them from the index. Each session is removed by a
 * script that checks it still belongs to the user, so a stale index entry cannot end someone else's
 * session. Returns how many were live.
 */
async function endSessions(
  settings: IndexSettings,
  userId: string,
  handles: string[],
  seenAsRead?: readonly string[],
): Promise<number> {
  const { redis, prefix, tombstoneMs } = settings;
  settings.onEnding?.(handles);
  const results = await guard(settings, undefined, () =>
    Promise.all(
      handles.map((h, i) =>
        runScript<string | null>(
          redis,
          DESTROY,
          [sessionKeyFromHandle(prefix, h)],
          [tombstoneMs, userId, '', seenAsRead?.[i] ?? '', newToken()],
        ),
      ),
    ),
  ).catch((error: unknown) => {
    // Refused or never sent, the sessions live on (a timeout may have ended them: kept noted).
    if (didNotRun(error)) settings.onEndFailed?.(handles);
    throw error;
  });
  const ended = handles.filter((_, i) => results[i] !== null && results[i] !== undefined);
  let unlist = handles;
  if (seenAsRead) {
    // The cap's: one left alone (used since it was read) lives on, listed and not noted as ended.
    // (One already gone is left listed too, until list() or its score retires it.)
    unlist = ended;
    const kept = handles.filter((h) => !ended.includes(h));
    if (kept.length > 0) settings.onEndFailed?.(kept);
  }
  // Remove exactly these entries (not the whole index): a login racing with us keeps its entry.
  // The sessions have ended: a failure here (the index on a node that is down) leaves listings that
  // list() and logoutAll() tell from live sessions, and must not report the ending as failed.
  if (unlist.length > 0) {
    await guard(settings, userIndexKey(prefix, userId), () =>
      removeFromUserIndex(redis, prefix, userId, unlist),
    ).catch(unlistFailed);
  }
  return ended.length;
}

/** A session ended, but its user-index entry could not be removed (see the README's session events). */
export function unlistFailed(error: unknown): void {
  emitKitEvent({ component: 'session', type: 'unlist-failed', error: error as Error });
}
