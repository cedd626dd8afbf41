import { defineScript, LUA_NOW_MS, type ScriptDefinition } from '../scripts';

/** Algorithm codes as the Lua script reads them (one byte each keeps ARGV small). */
export const ALGORITHM_CODE = {
  'fixed-window': 'f',
  'sliding-window': 's',
  'token-bucket': 't',
  gcra: 'g',
} as const;

/** Script modes. */
export const MODE_CONSUME = 'c';
export const MODE_REFUND = 'r';
export const MODE_PEEK = 'p';

// Each algorithm is one Lua function below that loads its key once and returns a small object:
// check (what a request of this cost would get), take (count it, in memory, and answer a refund hint),
// save (write once at the end) and refund (in memory too; save writes it). A single script runs a list of policies of any mix
// over a batch of requests for the same client, in order, exactly as if they had arrived one after
// another at the same instant: several policies and several requests cost one round trip. A request
// is allowed only if every policy allows it, and a denied request consumes from none.
//
// KEYS: one key per policy, all sharing the client's {hash tag}.
// ARGV: mode, then per policy: algorithm code, limit, window ms; then per request: cost, member id
//       (sliding-window log entry) and, for refunds only, origin ms (when the request was counted)
//       and one refund hint per policy.
// Reply: per request { allowed 0|1, now ms, then per policy: remaining, reset ms, retry ms };
//   refund: { 1, now ms }.
//   reset = until the quota is fully restored; retry = until a request of this cost could pass.
//   A counted request has no retry, so that slot carries its refund hint instead: how far the state
//   was from "idle" before it took (token bucket: missing units; gcra: tat - origin us).
//
// Why hints: time heals a counted request's cost (a bucket refills, a tat falls behind the clock),
// so giving back the full cost later could hand out units the request no longer holds and let more
// than the algorithm promises through. The hint bounds what time can have healed since: only the
// part not yet healed is given back. A refund soon after the decision gives back everything. Gap
// (README, Refunds): the hint counts earlier requests still held then; one refunded first overstates it.
const LUA = `${LUA_NOW_MS}
local now_us = tonumber(__t[1]) * 1000000 + tonumber(__t[2])
local mode = ARGV[1]
local consume = mode == 'c'
local refund = mode == 'r'
local peek = mode == 'p'
local function int(x) return string.format('%.0f', x) end

-- fixed-window: hash { s = window start ms, n = units used }; expires at the window end.
local function fixed(key, limit, win)
  local start = now_ms - (now_ms % win)
  local h = redis.call('HMGET', key, 's', 'n')
  local used = 0
  if tonumber(h[1]) == start then used = tonumber(h[2]) or 0 end
  local left = start + win - now_ms
  local dirty = false
  local P = {}
  function P.check(cost, r)
    r.ok = used + cost <= limit
    r.rem = limit - used
    r.reset = used > 0 and left or 0
    r.retry = r.ok and 0 or left
    r.rem2 = limit - used - cost
    r.reset2 = left
  end
  function P.take(cost)
    used = used + cost
    dirty = true
    return 0
  end
  function P.save()
    if not dirty then return end
    redis.call('HSET', key, 's', int(start), 'n', int(used))
    redis.call('PEXPIRE', key, left)
  end
  function P.refund(cost, member, origin)
    -- Only the window the request was counted in can give it back.
    if used > 0 and origin - (origin % win) == start then
      used = math.max(0, used - cost)
      dirty = true
    end
  end
  return P
end

-- sliding-window (exact log): sorted set of entries "<cost>:<id>" scored by time ms; member "#"
-- holds minus the live sum as its score, so the sum is O(1) to read and never matches a time range.
local function sliding(key, limit, win)
  local cutoff = now_ms - win
  local sum = -(tonumber(redis.call('ZSCORE', key, '#')) or 0)
  local expired = redis.call('ZRANGEBYSCORE', key, '(0', cutoff)
  if #expired > 0 then
    for i = 1, #expired do sum = sum - tonumber(string.match(expired[i], '^(%d+)')) end
    if sum < 0 then sum = 0 end
    if not peek then
      redis.call('ZREMRANGEBYSCORE', key, '(0', cutoff)
      redis.call('ZADD', key, -sum, '#')
    end
  end
  -- Time of the newest live entry, read once and only when a reply needs it.
  local newest = nil
  local dirty = false
  local P = {}
  function P.check(cost, r)
    r.ok = sum + cost <= limit
    r.rem = limit - sum
    r.reset = 0
    if sum > 0 then
      if newest == nil then
        local e = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
        newest = tonumber(e[2]) or 0
      end
      if newest > 0 then r.reset = newest + win - now_ms end
    end
    r.retry = 0
    if not r.ok then
      -- Walk the oldest entries until enough cost has expired; each entry is >= 1 unit, so 'need'
      -- entries always suffice when the request can pass at all. Entries taken earlier in this
      -- batch are already in the set.
      local need = sum + cost - limit
      local oldest = redis.call('ZRANGEBYSCORE', key, '(' .. cutoff, '+inf', 'WITHSCORES', 'LIMIT', 0, int(need))
      local freed = 0
      r.retry = win
      for i = 1, #oldest, 2 do
        freed = freed + tonumber(string.match(oldest[i], '^(%d+)'))
        if freed >= need then
          r.retry = tonumber(oldest[i + 1]) + win - now_ms
          break
        end
      end
    end
    r.rem2 = limit - sum - cost
    r.reset2 = win
  end
  function P.take(cost, member)
    redis.call('ZADD', key, now_ms, int(cost) .. ':' .. member)
    sum = sum + cost
    newest = now_ms
    dirty = true
    return 0
  end
  function P.save()
    if not dirty then return end
    redis.call('ZADD', key, -sum, '#')
    redis.call('PEXPIRE', key, win)
  end
  function P.refund(cost, member)
    -- The log entry itself is given back, so this is exact: an entry that expired is simply gone.
    if redis.call('ZREM', key, int(cost) .. ':' .. member) == 1 then
      redis.call('ZINCRBY', key, cost, '#')
    end
  end
  return P
end

-- token-bucket: hash { k = tokens x window (integers, no float drift), t = last update ms }.
-- Refill is 'limit' scaled units per ms, capacity limit x window.
local function bucket(key, limit, win)
  local cap = limit * win
  local h = redis.call('HMGET', key, 'k', 't')
  local tk = cap
  if h[1] then tk = math.min(cap, tonumber(h[1]) + math.max(0, now_ms - tonumber(h[2])) * limit) end
  local dirty = false
  local P = {}
  function P.check(cost, r)
    local need = cost * win
    local after = tk - need
    r.ok = tk >= need
    r.rem = math.floor(tk / win)
    r.reset = math.ceil((cap - tk) / limit)
    r.retry = r.ok and 0 or math.ceil((need - tk) / limit)
    r.rem2 = math.floor(after / win)
    r.reset2 = math.ceil((cap - after) / limit)
  end
  function P.take(cost)
    local missing = cap - tk
    tk = tk - cost * win
    dirty = true
    return missing
  end
  function P.save()
    if not dirty then return end
    redis.call('HSET', key, 'k', int(tk), 't', int(now_ms))
    redis.call('PEXPIRE', key, math.max(1, math.ceil((cap - tk) / limit)))
  end
  function P.refund(cost, member, origin, missing)
    if not h[1] then return end
    -- Without this request the bucket would have been 'missing' short of full, and would have
    -- refilled to the cap after missing / limit ms; refill past that point healed the cost for good.
    local healed = math.max(0, (now_ms - origin) * limit - missing)
    local back = cost * win - healed
    if back <= 0 then return end
    tk = math.min(cap, tk + back)
    dirty = true
  end
  return P
end

-- gcra: one string, the theoretical arrival time in microseconds. Emission interval T = window/limit
-- (rounded to 1 us), burst tolerance limit x T.
local function gcra(key, limit, win)
  local T = math.max(1, math.floor(win * 1000 / limit + 0.5))
  local tau = T * limit
  local tat = tonumber(redis.call('GET', key)) or now_us
  if tat < now_us then tat = now_us end
  local dirty = false
  local P = {}
  function P.check(cost, r)
    local new_tat = tat + cost * T
    r.ok = new_tat - now_us <= tau
    r.rem = math.floor((tau - (tat - now_us)) / T)
    r.reset = math.ceil((tat - now_us) / 1000)
    r.retry = r.ok and 0 or math.ceil((new_tat - tau - now_us) / 1000)
    r.rem2 = math.floor((tau - (new_tat - now_us)) / T)
    r.reset2 = math.ceil((new_tat - now_us) / 1000)
  end
  function P.take(cost)
    local hint = tat - now_ms * 1000
    tat = tat + cost * T
    dirty = true
    return hint
  end
  function P.save()
    if not dirty then return end
    if tat > now_us then
      redis.call('SET', key, int(tat), 'PX', math.max(1, math.ceil((tat - now_us) / 1000)))
    else
      -- Refunded back to a full burst: the same as no key at all.
      redis.call('DEL', key)
    end
  end
  function P.refund(cost, member, origin, hint)
    -- Without this request the tat would have been origin + hint; only once the clock passed that
    -- could time have healed the cost.
    local healed = math.max(0, now_us - (origin * 1000 + hint))
    local back = cost * T - healed
    if back <= 0 then return end
    tat = math.max(now_us, tat - back)
    dirty = true
  end
  return P
end

local open = { f = fixed, s = sliding, t = bucket, g = gcra }
local count = #KEYS
local pols = {}
local st = {}
for i = 1, count do
  local b = 2 + (i - 1) * 3
  pols[i] = open[ARGV[b]](KEYS[i], tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]))
  st[i] = {}
end
local first = 2 + 3 * count
if refund then
  for q = first, #ARGV, 3 + count do
    local cost, origin = tonumber(ARGV[q]), tonumber(ARGV[q + 2])
    for i = 1, count do pols[i].refund(cost, ARGV[q + 1], origin, tonumber(ARGV[q + 2 + i])) end
  end
  for i = 1, count do pols[i].save() end
  return { 1, now_ms }
end

local out = {}
for q = first, #ARGV, 2 do
  local cost = tonumber(ARGV[q])
  local allowed = true
  for i = 1, count do
    pols[i].check(cost, st[i])
    if not st[i].ok then allowed = false end
  end
  local commit = consume and allowed
  out[#out + 1] = allowed and 1 or 0
  out[#out + 1] = now_ms
  for i = 1, count do
    local r = st[i]
    if commit then
      local hint = pols[i].take(cost, ARGV[q + 1])
      out[#out + 1] = r.rem2
      out[#out + 1] = r.reset2
      out[#out + 1] = hint
    else
      out[#out + 1] = math.max(0, r.rem)
      out[#out + 1] = r.reset
      out[#out + 1] = r.retry
    end
  end
end
for i = 1, count do pols[i].save() end
return out
`;

const byKeyCount = new Map<number, ScriptDefinition>();

/**
 * The rate-limit script for `policies` keys. One Lua body serves every algorithm mix; it is registered
 * once per policy count because the registry (like ioredis defineCommand) fixes the number of keys.
 */
export function rateLimitScript(policies: number): ScriptDefinition {
  let script = byKeyCount.get(policies);
  if (!script) {
    script = defineScript(`rate_limit_v4_${policies}`, policies, LUA);
    byKeyCount.set(policies, script);
  }
  return script;
}
