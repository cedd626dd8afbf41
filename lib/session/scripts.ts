import { hashPart, taggedKey } from '../keys';
import { defineScript, LUA_NOW_MS } from '../scripts';

/*
 * Layout. A session is one Redis HASH, tagged by its handle (a digest of the session id), so it has
 * its own slot on Cluster:
 *   <prefix>sess:{<handle>}       d = JSON data, c = created ms, s = last seen ms, ua = user agent,
 *                                 t = its lifetime (ms: the cookie's maxAge, else the store's ttl),
 *                                 u = user id, li = when that user logged in to it (ms),
 *                                 ix = until when the user index vouches for it (ms),
 *                                 x = tombstone (destroyed; refuse late writes)
 * The user index is a sorted set tagged by the user id, so it lives in the user's slot:
 *   <prefix>sess-user:{<userId>}  member = handle, score = ms until which the entry is kept
 * A session and its user index are in different slots, so no script touches both: each script
 * below works on one key, and the store calls them in an order that errs towards listing a dead
 * session (pruned lazily) rather than missing a live one (which logoutAll would then leave alive).
 */

/** Non-reversible public handle of a session id: shown by `list()`, used in keys. */
export function sessionHandle(sid: string): string {
  return hashPart(sid);
}

export function sessionKeyFromHandle(prefix: string, handle: string): string {
  return taggedKey(prefix, 'sess', handle);
}

export function sessionKey(prefix: string, sid: string): string {
  return sessionKeyFromHandle(prefix, sessionHandle(sid));
}

export function userIndexKey(prefix: string, userId: string): string {
  return taggedKey(prefix, 'sess-user', userId);
}

// Redis refuses a script's first write that may grow memory when it is full (OOM under noeviction),
// so reads write their bookkeeping through this: under OOM a read still answers (the index is
// claimed later), instead of taking every logged-in request down with the writes.
const softHset = (args: string) => `type(redis.pcall('HSET', KEYS[1], ${args})) ~= 'table'`;

// Says (in `refresh`) whether the user index must be refreshed, and claims that refresh: the index
// entry is written for 2×ttl and refreshed once it would run out before the session, which lives for
// `lives` ms more (a Lua expression), so one index write covers about ttl of activity instead of one
// per request. `covered` is false when a needed claim could not be written (OOM).
const indexCheck = (lives: string) => `
local refresh = 0
local covered = true
if uid ~= '' then
  if cur_u ~= uid or (tonumber(cur_ix) or 0) < now_ms + ${lives} then
    -- Who claimed (ixc: the caller's token) and what the index vouched for before (ixp): if the
    -- reply is lost, FORGET_CLAIM undoes this claim, and only this one, down to that end.
    local prev = 0
    if cur_u == uid then prev = tonumber(cur_ix) or 0 end
    if ${softHset("'u', uid, 'ix', now_ms + 2 * ttl, 'ixp', prev, 'ixc', claim_token")} then refresh = 1 else covered = false end
  elseif claim_token ~= '' and cur_ixc == claim_token then
    -- A second run of the call that claimed (its reply lost, ioredis sent it again) finds its own
    -- claim: the index write is still to be made, from the end the claim recorded. Answered
    -- "indexed already", the index entry would run out under a live session (logoutAll misses it).
    refresh = 1
    cur_ix = cur_ixp
  end
end
`;

// Shared tail of save/touch: keep the session alive for ttl, and check the user index. Without a
// claim, the session must not outlive what the index vouches for (logoutAll would miss it): it
// lives on only up to the index entry's end.
const INDEX_CHECK = `${indexCheck('ttl')}
if covered then
  redis.call('PEXPIRE', KEYS[1], ttl)
else
  local keep = (tonumber(cur_ix) or 0) - now_ms
  if keep > redis.call('PTTL', KEYS[1]) then redis.call('PEXPIRE', KEYS[1], keep) end
end
`;

/**
 * KEYS: session. ARGV: data JSON, ttl ms, user id or '', user agent or '', '1' when the session must
 * already exist (it was read from Redis in this request), claim token, deadline (Redis ms) or ''.
 * → {refresh|-1|-2, now, the index entry's end before a claim (ms, 0: none)}; -2: it came after its
 * deadline, when the store had given up on it and answered 503, and wrote nothing.
 */
export const SAVE = defineScript(
  'session_save_v4',
  1,
  `local claim_token = ARGV[6] or ''
if redis.call('HEXISTS', KEYS[1], 'x') == 1 then return {-1, 0} end
if ARGV[5] == '1' and redis.call('HEXISTS', KEYS[1], 'd') == 0 then return {-1, 0} end
${LUA_NOW_MS}
local deadline = tonumber(ARGV[7])
if deadline and now_ms > deadline then return {-2, now_ms} end
local ttl = tonumber(ARGV[2])
local uid = ARGV[3]
local cur = redis.call('HMGET', KEYS[1], 'u', 'ix', 'ixc', 'ixp')
local cur_u, cur_ix, cur_ixc, cur_ixp = cur[1], cur[2], cur[3], cur[4]
redis.call('HSET', KEYS[1], 'd', ARGV[1], 's', now_ms, 't', ttl)
redis.call('HSETNX', KEYS[1], 'c', now_ms)
if ARGV[4] ~= '' then redis.call('HSETNX', KEYS[1], 'ua', ARGV[4]) end
if uid == '' and cur_u then redis.call('HDEL', KEYS[1], 'u', 'ix', 'ixp', 'ixc', 'li') end
if uid ~= '' and cur_u ~= uid then redis.call('HSET', KEYS[1], 'li', now_ms) end
${INDEX_CHECK}
return {refresh, now_ms, tonumber(cur_ix) or 0}`,
);

// Slides a live session's expiry by `ttl` (a Lua expression over `cur` = HMGET x u ix d t ixc ixp)
// without rewriting its data, and records that lifetime.
const slide = (
  ttl: string,
) => `local cur = redis.call('HMGET', KEYS[1], 'x', 'u', 'ix', 'd', 't', 'ixc', 'ixp')
if cur[1] or not cur[4] then return {-1} end
${LUA_NOW_MS}
local ttl = ${ttl}
local uid = cur[2] or ''
local cur_u, cur_ix, cur_ixc, cur_ixp = cur[2], cur[3], cur[6], cur[7]
local _ = ${softHset("'s', now_ms, 't', ttl")}
${INDEX_CHECK}`;

/**
 * KEYS: session. ARGV: ttl ms, claim token. Extends a live session without rewriting its data. →
 * {refresh|-1, user id, the index entry's end before a claim}
 */
export const TOUCH = defineScript(
  'session_touch_v2',
  1,
  `local claim_token = ARGV[2] or ''
${slide('tonumber(ARGV[1])')}
return {refresh, uid, tonumber(cur_ix) or 0}`,
);

/**
 * KEYS: session. ARGV: the store's ttl ms, '1' to slide, claim token. Reads a live session and (rolling) slides its
 * expiry by its own lifetime (a "remember me" session keeps its longer one) in the same round trip,
 * so an unchanged request costs one call. A session keeps the lifetime it was written with, as its
 * cookie does. Without rolling the cookie keeps its expiry, so the key must too: a replayed cookie
 * past its Expires must not find the session alive. → {refresh|-1, user id, data JSON, ttl used, the
 * index entry's end before a claim, now ms}
 */
export const LOAD = defineScript(
  'session_load_v3',
  1,
  // Sessions written before `t` existed slide by the store's ttl; their next touch records `t`.
  // Without rolling nothing slides, but a lost index claim (a write that timed out after landing;
  // its claim was dropped) is still retried here: until the session's end, the index must vouch.
  `local claim_token = ARGV[3] or ''
if ARGV[2] ~= '1' then
  local cur = redis.call('HMGET', KEYS[1], 'x', 'u', 'd', 't', 'ix', 'ixc', 'ixp')
  if cur[1] or not cur[3] then return {-1} end
  ${LUA_NOW_MS}
  local ttl = tonumber(cur[4]) or tonumber(ARGV[1])
  local uid = cur[2] or ''
  local cur_u, cur_ix, cur_ixc, cur_ixp = cur[2], cur[5], cur[6], cur[7]
  -- Last seen (for list()), without touching the expiry.
  local _ = ${softHset("'s', now_ms")}
  ${indexCheck("redis.call('PTTL', KEYS[1])")}
  return {refresh, uid, cur[3], ttl, tonumber(cur_ix) or 0, now_ms}
end
${slide('tonumber(cur[5]) or tonumber(ARGV[1])')}
return {refresh, uid, cur[4], ttl, tonumber(cur_ix) or 0, now_ms}`,
);

/**
 * KEYS: session. ARGV: until when (ms) the user index vouched for it before a claim that failed, or
 * 0 when the claiming call's reply never came; that call's claim token. The claim (`ix`) is dropped,
 * so the next request makes it again; and the session, slid by the script that claimed, must not
 * outlive the index entry meanwhile (logoutAll would miss it). Without a reply, that end is the one
 * the claim recorded (`ixp`), if the call claimed at all (`ixc` is its token).
 */
export const FORGET_CLAIM = defineScript(
  'session_forget_claim',
  1,
  `redis.call('HDEL', KEYS[1], 'ix')
local until_ms = tonumber(ARGV[1]) or 0
if until_ms <= 0 and (ARGV[2] or '') ~= '' then
  local claim = redis.call('HMGET', KEYS[1], 'ixc', 'ixp')
  if claim[1] == ARGV[2] then until_ms = tonumber(claim[2]) or 0 end
end
if until_ms > 0 then
  ${LUA_NOW_MS}
  local keep = until_ms - now_ms
  if keep > 0 and redis.call('PTTL', KEYS[1]) > keep then redis.call('PEXPIRE', KEYS[1], keep) end
end
return 1`,
);

/**
 * KEYS: session. ARGV: tombstone ms, required user id or ''. Replaces the session with a short-lived
 * tombstone so a request still in flight cannot write it back. → user id it belonged to, or false
 * when (with a required user) it belonged to someone else or was already gone. With a required user
 * and no key at all, it may be a login still being saved (a login lists its session before writing
 * it): the tombstone is left all the same, so that write fails instead of a session nobody lists.
 * ARGV[3] '1' (a login replacing the session): a first write that Redis refuses under OOM, so the
 * old session is kept when the new one could not be saved (DEL alone would pass, and the login's
 * later writes fail: the user would be logged out by a login that answered 503).
 * ARGV[4] (the cap): the session's last-seen time (`s`) as the cap read it; a session used since
 * is left alone (false), as another login racing past the cap may have ranked it otherwise.
 * ARGV[5]: this call's token. The tombstone keeps it (`xt`) with the owner it ended (`xu`): a second
 * run of the same call (its reply lost, ioredis sent it again) answers that owner again, instead of
 * "already gone" for a session it ended itself.
 */
export const DESTROY = defineScript(
  'session_destroy_v5',
  1,
  `local cur = redis.call('HMGET', KEYS[1], 'u', 'x', 'd', 's', 'xt', 'xu')
local token = ARGV[5] or ''
if cur[2] and token ~= '' and cur[5] == token then return cur[6] or '' end
if ARGV[2] ~= '' and (cur[1] ~= ARGV[2] or cur[2]) then
  if not cur[1] and not cur[2] and not cur[3] then
    -- Under OOM Redis refuses a script's first write that may grow memory, not later ones: a DEL
    -- first, so that ending a user's sessions is not refused for a session that had already gone.
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[1], 'x', '1')
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
  end
  return false
end
if ARGV[4] and ARGV[4] ~= '' and cur[4] ~= ARGV[4] then return false end
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'x', '1') end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'x', '1', 'xt', token, 'xu', cur[1] or '')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return cur[1] or ''`,
);

/**
 * KEYS: user index. ARGV: handle, keep ms. Adds/extends one entry, prunes expired ones. → how many
 * entries it holds (past `maxSessionsPerUser`, the store checks which sessions are live and ends
 * the surplus: the sessions live in other slots, out of this script's reach).
 */
export const INDEX_ADD = defineScript(
  'session_index_add_v3',
  1,
  // ZADD first: Redis refuses a script for OOM only before its first write, and a prune that went
  // through would let a login under OOM end one of the user's sessions (the cap) before failing.
  `${LUA_NOW_MS}
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.max(1, tonumber(top[2]) - now_ms))
return redis.call('ZCARD', KEYS[1])`,
);

/** KEYS: user index. Prunes expired entries and returns the remaining handles. */
export const INDEX_LIST = defineScript(
  'session_index_list',
  1,
  `${LUA_NOW_MS}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
return redis.call('ZRANGE', KEYS[1], 0, -1)`,
);
