import { isCluster, type RedisClient } from '../client';
import { defineScript, LUA_NOW_MS, runScript, runScriptBuffer } from '../scripts';
import { invalidatedKeyOf, lockKeyOf } from './key';
import { takeLockLua } from './lock';

/**
 * Redis layout (all keys carry a TTL):
 *   <prefix>c:{<key>}              entry, or a Vary marker `ERKV<gen>\n<names,csv>`
 *   <prefix>c:{<key>}:v:<gen>:<h>  one variant behind a marker (h = sha1 of the request header values)
 *   <prefix>c:{<key>}:lock         fill lock (single-flight across processes)
 *   <prefix>c:{<key>}:nostore      the last fill was uncacheable: misses skip the lock for a while
 * A marker, its variants and its lock share the entry's {hash tag}, so lookup and store are one
 * script in one slot. Deleting the marker orphans its variants for good: a new marker gets a new
 * generation, so old variants can never be served again (they expire on their TTL). Tags: see
 * tags.ts.
 */

// KEYS: entry, lock, no-store marker. ARGV: lock token ('' = don't lock), lock ttl, then request
// header name/value pairs. Replies {1, value, pttl, key} | {0, locked, nostore, now ms, generation,
// names} (the last two '' unless a Vary marker led to a missing variant) | {2, names} (marker needs
// header values not sent). A fill's store checks its tags were not invalidated since `now`, and knows
// its variant's key before writing it from the marker's generation.
const LOOKUP = defineScript(
  'cache_lookup_v2',
  3,
  `local function miss(gen, names)
  ${LUA_NOW_MS}
  gen = gen or ''
  names = names or ''
  if redis.call('EXISTS', KEYS[3]) == 1 then return {0, 0, 1, now_ms, gen, names} end
  -- Finding its own token: a copy ioredis sent again after a reply was lost; the lock is ours.
  if ARGV[1] ~= '' and ${takeLockLua('KEYS[2]', 'ARGV[1]', 'ARGV[2]')} then
    return {0, 1, 0, now_ms, gen, names}
  end
  return {0, 0, 0, now_ms, gen, names}
end
local key = KEYS[1]
local v = redis.call('GET', key)
if not v then return miss() end
if string.sub(v, 1, 4) == 'ERKV' then
  local nl = string.find(v, '\\n', 5, true)
  if not nl then return {1, v, 0, key} end
  local names = string.sub(v, nl + 1)
  local have = {}
  for i = 3, #ARGV - 1, 2 do have[ARGV[i]] = ARGV[i + 1] end
  local parts = {}
  for name in string.gmatch(names, '[^,]+') do
    local value = have[name]
    if value == nil then return {2, names} end
    parts[#parts + 1] = value
  end
  local gen = string.sub(v, 5, nl - 1)
  key = key .. ':v:' .. gen .. ':' .. redis.sha1hex(table.concat(parts, '\\n'))
  v = redis.call('GET', key)
  if not v then return miss(gen, names) end
end
return {1, v, redis.call('PTTL', key), key}`,
);

/** The least an invalidation mark is kept, by an instance of any `lockTimeout` (invalidate.ts). */
export const MIN_MARK_MS = 60_000;
/** Past this, a fill without the lock is not stored: a mark it must see may be gone (5 s: Cluster clocks). */
const SLOW_FILL_MS = MIN_MARK_MS - 5_000;

// KEYS: entry, lock, key-invalidation mark. ARGV: value, ttl ms, lock token ('' = none), vary names
// csv ('' = none), new generation, the fill's start (Redis ms, '' = unknown), the createdAt of the
// entry this one must replace ('' = any, '-' = none: the key must be empty), then the request header
// values in names order. Returns the key written, or when nothing was: '' when the fill no longer
// holds its lock (an invalidation deleted it while the origin ran, so the value may predate the
// write that invalidated it; or it expired and another fill took over); for a fill without a lock,
// '!invalidated' when the key was invalidated since it started, and '!slow' when it started
// SLOW_FILL_MS ago or more (the marks that tell it about invalidations since then, kept 60 s at
// least by instances of any lockTimeout, may have expired); '!replaced' when the key no longer
// holds the entry to replace (deleted, or replaced by a newer fill). A key written always has '{'.
// createdAt is matched as text, not decoded: cjson refuses JSON that JavaScript writes (a lone
// surrogate in a tag). encodeEntry writes "c" right after the headers' list, and a quote inside a
// JSON string is escaped, so the first `],"c":` is the field; its text is the number as ioredis
// sends ARGV[7] (a Date.now() that was mocked may hold a fraction).
const STORE = defineScript(
  'cache_store_v5',
  3,
  `if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[3] then return '' end
if ARGV[3] == '' and ARGV[6] ~= '' then
  ${LUA_NOW_MS}
  if now_ms - tonumber(ARGV[6]) >= ${SLOW_FILL_MS} then return '!slow' end
  local inv = redis.call('GET', KEYS[3])
  if inv and tonumber(inv) >= tonumber(ARGV[6]) then return '!invalidated' end
end
if ARGV[7] == '-' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return '!replaced' end
elseif ARGV[7] ~= '' then
  local cur = redis.call('GET', KEYS[1])
  if not cur or string.sub(cur, 1, 4) ~= 'ERK1' or #cur < 8 then return '!replaced' end
  local meta = string.sub(cur, 9, 8 + struct.unpack('>I4', cur, 5))
  if string.match(meta, '%],"c":([^,]+),"t":') ~= ARGV[7] then return '!replaced' end
end
local key = KEYS[1]
local ttl = tonumber(ARGV[2])
local extend = false
if ARGV[4] ~= '' then
  local cur = redis.call('GET', KEYS[1])
  local gen
  if cur and string.sub(cur, 1, 4) == 'ERKV' then
    local nl = string.find(cur, '\\n', 5, true)
    if nl and string.sub(cur, nl + 1) == ARGV[4] then gen = string.sub(cur, 5, nl - 1) end
  end
  if gen then
    -- After the variant's SET: under OOM that new data must be the script's first write (refused).
    extend = redis.call('PTTL', KEYS[1]) < ttl
  else
    gen = ARGV[5]
    redis.call('SET', KEYS[1], 'ERKV' .. gen .. '\\n' .. ARGV[4], 'PX', ttl)
  end
  local parts = {}
  for i = 8, #ARGV do parts[#parts + 1] = ARGV[i] end
  key = KEYS[1] .. ':v:' .. gen .. ':' .. redis.sha1hex(table.concat(parts, '\\n'))
end
redis.call('SET', key, ARGV[1], 'PX', ttl)
if extend then redis.call('PEXPIRE', KEYS[1], ttl) end
if ARGV[3] ~= '' then redis.call('DEL', KEYS[2]) end
return key`,
);

// KEYS: lock, no-store marker. ARGV: lock token ('' = none held), marker ttl ms. Releases the lock
// (only its owner) and leaves the marker in the same step, so no waiter can take the lock in between.
// A fill that no longer holds its lock (let go, lost to an invalidation, expired) leaves no marker:
// the lock may be another fill's now, whose waiters must go on queueing on it.
const NO_STORE = defineScript(
  'cache_no_store_v2',
  2,
  `if ARGV[1] ~= '' then
  if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
  redis.call('DEL', KEYS[1])
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 1`,
);

/** A Vary marker a lookup passed through: its generation and its header names (comma-separated). */
export interface VaryMarker {
  generation: string;
  names: string;
}

export type LookupReply =
  | { kind: 'hit'; raw: Buffer; pttl: number; key: string }
  /** `marker`: the Vary marker the lookup passed through, or null when there was none. */
  | { kind: 'miss'; locked: boolean; noStore: boolean; now: number; marker: VaryMarker | null }
  | { kind: 'vary'; names: string[] };

/**
 * One round trip: the entry (through its Vary marker when there is one), else optionally the fill lock
 * — unless the no-store marker says the last fill was uncacheable.
 */
export async function lookup(
  redis: RedisClient,
  key: string,
  lockKey: string,
  noStoreKey: string,
  token: string,
  lockTtlMs: number,
  headerPairs: readonly string[],
): Promise<LookupReply> {
  const reply = await runScriptBuffer<[number, ...unknown[]]>(
    redis,
    LOOKUP,
    [key, lockKey, noStoreKey],
    [token, lockTtlMs, ...headerPairs],
  );
  if (reply[0] === 1) {
    return { kind: 'hit', raw: reply[1] as Buffer, pttl: Number(reply[2]), key: String(reply[3]) };
  }
  if (reply[0] === 2) return { kind: 'vary', names: String(reply[1]).split(',') };
  const generation = reply[4] === undefined ? '' : String(reply[4]);
  return {
    kind: 'miss',
    locked: reply[1] === 1,
    noStore: reply[2] === 1,
    now: Number(reply[3]),
    marker: generation ? { generation, names: String(reply[5]) } : null,
  };
}

/** Releases the fill lock of an uncacheable fill and leaves the no-store marker: one script. */
export function markNoStore(
  redis: RedisClient,
  lockKey: string,
  noStoreKey: string,
  token: string,
  ttlMs: number,
): Promise<number> {
  return runScript<number>(redis, NO_STORE, [lockKey, noStoreKey], [token, ttlMs]);
}

/** What a late store may replace: the entry created at this time, or ('none') no entry at all. */
export type Replaces = number | 'none';

/**
 * Writes an entry (or a variant behind its marker) and releases the fill lock, if `token` (when
 * given) still owns it, and (with `replaces`) if the entry there is still the one created then
 * ('none': if there is none). Resolves the key written, or why nothing was (see STORE).
 */
export function storeEntry(
  redis: RedisClient,
  key: string,
  value: Buffer,
  ttlMs: number,
  token: string,
  varyNames: readonly string[],
  varyValues: readonly string[],
  generation: string,
  since: number | undefined,
  replaces?: Replaces,
): Promise<string> {
  return runScript<string>(
    redis,
    STORE,
    [key, lockKeyOf(key), invalidatedKeyOf(key)],
    [
      value,
      ttlMs,
      token,
      varyNames.join(','),
      generation,
      since ?? '',
      replaces === 'none' ? '-' : (replaces ?? ''),
      ...varyValues,
    ],
  );
}

// KEYS: a key-invalidation mark. ARGV: its ttl ms. Stamps it with the Redis time.
const MARK_INVALIDATED = defineScript(
  'cache_mark_invalidated_v2',
  1,
  `${LUA_NOW_MS}
-- A DEL first: under OOM Redis refuses only a script's first write that may grow memory, and an
-- invalidation (which frees memory) must not be refused.
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[1], now_ms, 'PX', ARGV[1])
return 1`,
);

/**
 * Marks an entry as invalidated now (see `invalidatedKeyOf`). Before it is deleted: a fill without a
 * lock that stores between the two then finds the mark.
 */
export async function markInvalidated(redis: RedisClient, entryKey: string, markMs: number): Promise<void> {
  await runScript(redis, MARK_INVALIDATED, [invalidatedKeyOf(entryKey)], [markMs]);
}

/**
 * Deletes entry keys. Standalone: UNLINKs of at most UNLINK_SLICE keys (tens of thousands spread into
 * one call overflow the stack, inside ioredis's auto-pipelining, where it broke the pipeline's replies
 * and the process). Cluster: keys live in many slots and a multi-key command must stay in one, so
 * one UNLINK per key (auto-pipelined by ioredis when enabled).
 */
export async function unlinkKeys(redis: RedisClient, keys: readonly string[]): Promise<void> {
  if (keys.length === 0) return;
  if (!isCluster(redis)) {
    const slices: Promise<number>[] = [];
    for (let i = 0; i < keys.length; i += UNLINK_SLICE)
      slices.push(redis.unlink(...keys.slice(i, i + UNLINK_SLICE)));
    await Promise.all(slices);
    return;
  }
  await Promise.all(keys.map((k) => redis.unlink(k)));
}

const UNLINK_SLICE = 1000;
