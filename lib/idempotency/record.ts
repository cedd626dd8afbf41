import type { RedisClient } from '../client';
import { defineScript, LUA_NOW_MS, runScript, runScriptBuffer } from '../scripts';
import { newToken } from '../token';

/*
 * One Redis hash per (scope, method, route, key):
 *   state    'inflight' | 'done'
 *   fp       request fingerprint
 *   owner    random token of the request holding the lease (in flight only)
 *   lease    lease expiry, Redis server ms (in flight only; informational, PEXPIRE enforces it)
 *   status, message (reason phrase, '' = standard), headers (JSON), body (raw bytes), done_by
 *   (the owner token that stored it)   (done only)
 * In flight the key's TTL is the lease, so a crashed worker's reservation disappears on its own;
 * once done, the TTL is the replay window. `forget()` of a record in flight marks it `forgotten`
 * and takes its owner away (`owner` = '-') for the rest of its lease: new requests treat it as
 * absent, while its holder's next heartbeat sees that the lease is gone. It stays `inflight` with
 * its `fp`, so an instance of the previous version answers 409 (retry later) meanwhile, not 422.
 *
 * A holder whose record vanished (a Redis restart or failover without it, or a lease that lapsed while
 * nobody else came) takes it back on its next heartbeat, or stores its answer at the end: an absent
 * key means nobody else holds it and no answer is stored. A retry that came in between found the
 * key free and ran the handler again; the taking back then fails (`lost`), so only one answer is
 * stored (README: exactly-once needs Redis to keep its data). Not a holder reserved before a
 * `forget()`: each forget() sets `<record>:forgotten` to a new random token (kept for `ttl`),
 * RESERVE answers the one it saw, and a holder may take a record back only while there is none or
 * still that one. No clocks compared (a failover's new master may run behind); a mark that expired
 * means no forget() since the reservation, as a holder takes no record back once `ttl` minus
 * `lockTtl` (a margin for the round trips its clock does not see) has passed since it started (it
 * may still store into its own). Otherwise a holder whose heartbeats stopped (a
 * timeout guard answered) would take the record back once the forgotten mark's lease ran out, a completion
 * that ioredis sent again (its reply lost) would store the answer again after forget() removed it,
 * and a holder overtaken by a retry whose answer was then forgotten would store its own: each an
 * answer forget() was called to discard. A request reserved after the forget() (the key used
 * afresh) takes its record back as usual.
 */

/** The token of the record's last forget() within `ttl` (same hash tag as the record): see above. */
const forgottenKeyOf = (key: string): string => `${key}:forgotten`;

// A reservation that finds its own owner token is a copy ioredis sent again after the connection
// dropped before the reply (the first one landed): it is still this request's reservation.
// KEYS: the record, and its forgotten mark (see above), which a reservation answers.
const RESERVE = defineScript(
  'idempotency_reserve_v5',
  2,
  `${LUA_NOW_MS}
local key = KEYS[1]
local seen = redis.call('GET', KEYS[2]) or ''
local lock_ms = tonumber(ARGV[3])
local head = redis.call('HMGET', key, 'state', 'fp', 'forgotten', 'owner', 'lease')
if not head[1] or head[3] then
  -- HSET first: Redis refuses a script for OOM only before its first write, and one that got past
  -- the check would reserve a key whose answer can then not be stored. A forgotten record (in
  -- flight: state, fp, owner, lease) is overwritten field by field; its lease end is kept (fl), so
  -- that releasing this reservation puts the forgotten mark back for the rest of it.
  redis.call('HSET', key, 'state', 'inflight', 'fp', ARGV[1], 'owner', ARGV[2], 'lease', now_ms + lock_ms)
  if head[3] then
    redis.call('HDEL', key, 'forgotten')
    if head[5] then redis.call('HSET', key, 'fl', head[5]) end
  end
  redis.call('PEXPIRE', key, lock_ms)
  return {'reserved', seen}
end
if head[2] ~= ARGV[1] then return {'mismatch'} end
if head[1] == 'inflight' then
  if head[4] == ARGV[2] then return {'reserved', seen} end
  return {'inflight', redis.call('PTTL', key)}
end
local done = redis.call('HMGET', key, 'status', 'headers', 'body', 'message')
return {'done', done[1], done[2], done[3], done[4]}
`,
);

// `done_by`: a completion that finds its own answer stored is a copy ioredis sent again after the
// connection dropped before the reply; the first one stored it, so the lease was not lost.
const COMPLETE = defineScript(
  'idempotency_complete_v10',
  2,
  `${LUA_NOW_MS}
local key = KEYS[1]
local head = redis.call('HMGET', key, 'state', 'owner', 'done_by')
local took_back = 0
if not head[1] then
  -- ARGV[9] '0': the holder is near ttl (see above), and takes nothing back.
  if ARGV[9] ~= '1' then return 0 end
  local forgotten = redis.call('GET', KEYS[2])
  if forgotten and forgotten ~= ARGV[8] then return 0 end
  took_back = 1
  redis.call('HSET', key, 'fp', ARGV[7])
elseif head[1] == 'done' and head[3] == ARGV[1] then
  return 1
elseif head[2] ~= ARGV[1] then
  return 0
end
-- HDEL first: under OOM Redis refuses a script's first write that may grow memory, not later ones,
-- and an answer lost here runs the handler again on the retry.
redis.call('HDEL', key, 'owner', 'lease')
redis.call('HSET', key, 'state', 'done', 'status', ARGV[2], 'headers', ARGV[3], 'body', ARGV[4], 'message', ARGV[6], 'done_at', now_ms, 'done_by', ARGV[1])
redis.call('PEXPIRE', key, tonumber(ARGV[5]))
return 1 + took_back
`,
);

// A reservation made over a forgotten record puts the forgotten mark back when it is released,
// while the forgotten holder's lease lasts: deleted, the key would let that holder take it back and
// store its answer (the one forget() was called to discard).
const RELEASE = defineScript(
  'idempotency_release_v3',
  1,
  `if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
local fl = tonumber(redis.call('HGET', KEYS[1], 'fl') or '')
if fl then
  ${LUA_NOW_MS}
  if fl > now_ms then
    redis.call('HDEL', KEYS[1], 'fl')
    redis.call('HSET', KEYS[1], 'owner', '-', 'forgotten', '1')
    redis.call('PEXPIRE', KEYS[1], fl - now_ms)
    return 1
  end
end
redis.call('DEL', KEYS[1])
return 1
`,
);

const HEARTBEAT = defineScript(
  'idempotency_heartbeat_v8',
  2,
  `${LUA_NOW_MS}
local key = KEYS[1]
local lock_ms = tonumber(ARGV[2])
local head = redis.call('HMGET', key, 'state', 'owner')
if not head[1] then
  local forgotten = redis.call('GET', KEYS[2])
  if forgotten and forgotten ~= ARGV[4] then return 0 end
  redis.call('HSET', key, 'state', 'inflight', 'fp', ARGV[3], 'owner', ARGV[1], 'lease', now_ms + lock_ms)
  redis.call('PEXPIRE', key, lock_ms)
  return 2
end
if head[2] ~= ARGV[1] then return 0 end
-- PEXPIRE first: under OOM Redis refuses a script's first write that may grow memory, not later
-- ones, and a lease that lapses lets a retry run the handler beside this run.
redis.call('PEXPIRE', key, lock_ms)
redis.call('HSET', key, 'lease', now_ms + lock_ms)
return 1
`,
);

// KEYS: the record, a marker unique to this call, and the record's forgotten mark (same hash tag).
// A second run of the call (its reply lost, ioredis sent it again) finds the marker and answers as the
// first did, instead of "no record" for one it removed itself. ARGV: how long the forgotten mark
// lasts (the replay window, ttl: as long as any holder may take a record back), and its token.
const FORGET = defineScript(
  'idempotency_forget_v8',
  3,
  `if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
local head = redis.call('HMGET', KEYS[1], 'state', 'forgotten')
if not head[1] or head[2] then return 0 end
-- The markers after the change: under OOM a DEL must still go through (Redis refuses a script's
-- first write that may grow memory, and none after it).
if head[1] == 'inflight' then
  redis.call('HDEL', KEYS[1], 'owner')
  redis.call('HSET', KEYS[1], 'owner', '-', 'forgotten', '1')
else
  redis.call('DEL', KEYS[1])
end
-- A token of this forget(), never one a reservation saw before (a count would restart at 1 once
-- it expired).
redis.call('SET', KEYS[3], ARGV[2], 'PX', tonumber(ARGV[1]))
redis.call('SET', KEYS[2], '1', 'PX', 60000)
return 1
`,
);

/** A response as stored for replay. */
export interface StoredResponse {
  status: number;
  /** A reason phrase other than the standard one for `status`. */
  message?: string;
  /** Header name (lower case) and value(s), in the order they were set. */
  headers: Array<[string, string | string[]]>;
  body: Buffer;
}

/** What reserving a key found. */
export type ReserveResult =
  /** `forgotten`: the record's forgotten mark the reservation saw, '' for none (see forget()). */
  | { state: 'reserved'; forgotten: string }
  | { state: 'mismatch' }
  | { state: 'inflight'; remainingMs: number }
  | { state: 'done'; response: StoredResponse };

/** Reserves the key for `owner`, or reports what holds it. One script call. */
export async function reserve(
  redis: RedisClient,
  key: string,
  fingerprint: string,
  owner: string,
  lockTtlMs: number,
): Promise<ReserveResult> {
  const reply = await runScriptBuffer<Array<Buffer | number | null>>(
    redis,
    RESERVE,
    [key, forgottenKeyOf(key)],
    [fingerprint, owner, lockTtlMs],
  );
  const state = String(reply[0]);
  if (state === 'reserved') return { state, forgotten: String(reply[1] ?? '') };
  if (state === 'mismatch') return { state };
  if (state === 'inflight') return { state, remainingMs: Math.max(0, Number(reply[1])) };
  if (state === 'done') {
    return {
      state,
      response: {
        status: Number(String(reply[1])),
        ...(reply[4] && String(reply[4]) ? { message: String(reply[4]) } : {}),
        headers: JSON.parse(String(reply[2] ?? '[]')) as StoredResponse['headers'],
        body: Buffer.isBuffer(reply[3]) ? reply[3] : Buffer.alloc(0),
      },
    };
  }
  throw new Error(`express-redis-kit: unexpected idempotency reserve reply ${JSON.stringify(state)}`);
}

/** What a heartbeat or the final store found: the lease held, taken back (the record had vanished), or lost to another. */
export type LeaseResult = 'held' | 'taken-back' | 'lost';

const leaseResult = (reply: unknown): LeaseResult =>
  Number(reply) === 1 ? 'held' : Number(reply) === 2 ? 'taken-back' : 'lost';

/** Stores the response if `owner` still holds the lease, or if the record vanished (see above). */
export async function complete(
  redis: RedisClient,
  key: string,
  owner: string,
  fingerprint: string,
  response: StoredResponse,
  ttlMs: number,
  forgotten: string,
  /** false near `ttl` since the holder started: store only into its own record (see above). */
  mayTakeBack = true,
): Promise<LeaseResult> {
  const stored = await runScript<number>(
    redis,
    COMPLETE,
    [key, forgottenKeyOf(key)],
    [
      owner,
      String(response.status),
      JSON.stringify(response.headers),
      response.body,
      ttlMs,
      response.message ?? '',
      fingerprint,
      forgotten,
      mayTakeBack ? '1' : '0',
    ],
  );
  return leaseResult(stored);
}

/** Deletes the reservation if `owner` still holds it, so the client may retry at once. */
export async function release(redis: RedisClient, key: string, owner: string): Promise<boolean> {
  return Number(await runScript<number>(redis, RELEASE, [key], [owner])) === 1;
}

/** Renews `owner`'s lease for another `lockTtlMs`, taking it back if the record vanished. */
export async function heartbeat(
  redis: RedisClient,
  key: string,
  owner: string,
  fingerprint: string,
  lockTtlMs: number,
  forgotten: string,
): Promise<LeaseResult> {
  const keys = [key, forgottenKeyOf(key)];
  return leaseResult(
    await runScript<number>(redis, HEARTBEAT, keys, [owner, lockTtlMs, fingerprint, forgotten]),
  );
}

/**
 * Deletes a record; one in flight leaves a tombstone for the rest of its lease, and nobody takes
 * the record back for `ttlMs` (see above).
 */
export async function forget(redis: RedisClient, key: string, ttlMs: number): Promise<boolean> {
  const keys = [key, `${key}:forget:${newToken()}`, forgottenKeyOf(key)];
  return Number(await runScript<number>(redis, FORGET, keys, [ttlMs, newToken()])) === 1;
}
