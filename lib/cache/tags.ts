import type { RedisClient } from '../client';
import { defineScript, LUA_NOW_MS, runScript } from '../scripts';

/*
 * Tags, each in its own slot (all keys carry a TTL):
 *   <prefix>t:{<tag>}              set of the entry keys carrying the tag
 *   <prefix>t:{<tag>}:exp          when each member's entry expires (sorted set, Redis ms)
 *   <prefix>t:{<tag>}:inv          Redis time (ms) of the tag's last invalidation, for a while
 *   <prefix>t:{<tag>}:taken        members taken by an invalidation, until their entries are gone
 *   <prefix>t:{<tag>}:takes        count of the tag's invalidations (tells a later one apart)
 */

/**
 * Beside each tag set, a sorted set (`:exp`) scores its members by when their entries expire (Redis
 * ms), so members whose entries expired leave the tag as it is written to (before, a tag kept the
 * key of every entry ever stored while traffic went on: tens of thousands of members, read whole by
 * invalidation). Pruned only a margin past that time: on a Cluster, the entry's node and the tag's
 * may disagree on the clock. The tag itself stays a plain set, so instances of an earlier version
 * (which only SADD, and take the set whole) keep working beside this one during a rolling deploy;
 * their members carry no score and leave with the set, as before.
 */
const TAG_PRUNE_MARGIN_MS = 60_000;
/** Most expired members one call removes: a tag written to keeps up, and no call runs long. */
const TAG_PRUNE_STEP = 100;
const LUA_TAG_PRUNE = `${LUA_NOW_MS}
local prune_before = '(' .. (now_ms - ${TAG_PRUNE_MARGIN_MS})
local function prune(set, exp)
  local dead = redis.call('ZRANGEBYSCORE', exp, '-inf', prune_before, 'LIMIT', 0, ${TAG_PRUNE_STEP})
  if #dead == 0 then return 0 end
  redis.call('SREM', set, unpack(dead))
  redis.call('ZREM', exp, unpack(dead))
  return #dead
end
`;

// KEYS: tag set, its invalidation marker, its expiry scores. ARGV: ttl ms, fill start (Redis ms, ''
// = unknown), member keys. The set lives as long as its longest-lived member. Returns 0, adding
// nothing, when the tag was invalidated after the fill started: the value may predate the write
// behind that invalidation.
const TAG_ADD = defineScript(
  'cache_tag_add_v3',
  3,
  `${LUA_TAG_PRUNE}
if ARGV[2] ~= '' then
  local inv = redis.call('GET', KEYS[2])
  if inv and tonumber(inv) >= tonumber(ARGV[2]) then return 0 end
end
local ttl = tonumber(ARGV[1])
redis.call('SADD', KEYS[1], unpack(ARGV, 3))
local scored = {}
for i = 3, #ARGV do
  scored[#scored + 1] = now_ms + ttl
  scored[#scored + 1] = ARGV[i]
end
-- GT: a member written again keeps the later of its expiries.
redis.call('ZADD', KEYS[3], 'GT', unpack(scored))
prune(KEYS[1], KEYS[3])
-- Past the member's ttl by the prune margin: the entry's own write comes after this call, and may
-- land late (a stall, a timed-out call Redis runs afterwards).
local keep = ttl + ${TAG_PRUNE_MARGIN_MS}
for _, key in ipairs({ KEYS[1], KEYS[3] }) do
  if redis.call('PTTL', key) < keep then redis.call('PEXPIRE', key, keep) end
end
return 1`,
);

// KEYS: tag set, its invalidation marker, its members being invalidated, its take counter, its
// expiry scores. ARGV: marker ttl ms. Moves the set's members to the third key in one step, so two
// invalidations never both miss a member, and notes when, for fills still running. Returns the
// members of both: a take whose reply was lost (a timeout that landed) left its members there, and
// the next invalidation of the tag unlinks them instead of finding an empty set while their entries
// live on. `forgetTaken()` clears them once done, unless a later take happened: the counter tells
// takes apart even within one millisecond, while the marker keeps Redis's real time for TAG_ADD
// (never ahead of the clock).
// → {take number, members...}
const TAG_TAKE = defineScript(
  'cache_tag_take_v2',
  5,
  `${LUA_NOW_MS}
-- The members go, so their expiries too (a member a lost take left behind is unlinked again: harmless).
redis.call('DEL', KEYS[5])
local ttl = math.max(redis.call('PTTL', KEYS[1]), redis.call('PTTL', KEYS[3]))
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SUNIONSTORE', KEYS[3], KEYS[3], KEYS[1])
  redis.call('DEL', KEYS[1])
end
redis.call('SET', KEYS[2], now_ms, 'PX', ARGV[1])
local take = redis.call('INCR', KEYS[4])
if ttl < 0 then ttl = tonumber(ARGV[1]) end
-- Outlives the taken members, so a late clean-up never meets a restarted count.
redis.call('PEXPIRE', KEYS[4], math.max(ttl, tonumber(ARGV[1])))
if redis.call('EXISTS', KEYS[3]) == 0 then return {take} end
redis.call('PEXPIRE', KEYS[3], ttl)
local out = redis.call('SMEMBERS', KEYS[3])
table.insert(out, 1, take)
return out`,
);

// KEYS: taken members, the tag's take counter. ARGV: take number, members. Forgets members only
// while no later take happened: a later one whose reply was lost relies on them for its retry.
const TAG_FORGET = defineScript(
  'cache_tag_forget',
  2,
  `if tonumber(redis.call('GET', KEYS[2])) == tonumber(ARGV[1]) then
  redis.call('SREM', KEYS[1], unpack(ARGV, 2))
end
return 1`,
);

/** The marker of a tag's last invalidation, in the tag's slot. */
const invalidatedKeyOf = (tagRedisKey: string) => `${tagRedisKey}:inv`;
/** The members an invalidation of the tag took and has not confirmed deleting, in the tag's slot. */
const takenKeyOf = (tagRedisKey: string) => `${tagRedisKey}:taken`;
const takesKeyOf = (tagRedisKey: string) => `${tagRedisKey}:takes`;
/** When each member's entry expires, in the tag's slot. */
const expiriesKeyOf = (tagRedisKey: string) => `${tagRedisKey}:exp`;

/** Adds members to a tag set; false (nothing added) when the tag was invalidated since `since`. */
export async function addToTag(
  redis: RedisClient,
  tagRedisKey: string,
  ttlMs: number,
  members: readonly string[],
  since: number | undefined,
): Promise<boolean> {
  const added = await runScript<number>(
    redis,
    TAG_ADD,
    [tagRedisKey, invalidatedKeyOf(tagRedisKey), expiriesKeyOf(tagRedisKey)],
    [ttlMs, since ?? '', ...members],
  );
  return Number(added) === 1;
}

/** What one tag take answered: its number (for {@link forgetTaken}) and the member keys to delete. */
export interface Taken {
  take: number;
  members: string[];
}

export async function takeTag(redis: RedisClient, tagRedisKey: string, markerTtlMs: number): Promise<Taken> {
  const [take, ...members] = await runScript<[number, ...string[]]>(
    redis,
    TAG_TAKE,
    [
      tagRedisKey,
      invalidatedKeyOf(tagRedisKey),
      takenKeyOf(tagRedisKey),
      takesKeyOf(tagRedisKey),
      expiriesKeyOf(tagRedisKey),
    ],
    [markerTtlMs],
  );
  return { take: Number(take), members };
}

/** After their entries were deleted: the taken members need no second invalidation. */
export async function forgetTaken(redis: RedisClient, tagRedisKey: string, taken: Taken): Promise<void> {
  // In slices: Lua's unpack() refuses a few thousand arguments, and a big tag has more members.
  for (let i = 0; i < taken.members.length; i += FORGET_SLICE) {
    await runScript(
      redis,
      TAG_FORGET,
      [takenKeyOf(tagRedisKey), takesKeyOf(tagRedisKey)],
      [taken.take, ...taken.members.slice(i, i + FORGET_SLICE)],
    );
  }
}

const FORGET_SLICE = 1000;
