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

// Each algorithm is one Lua function below; a single script runs a list of policies of any mix, so
// several policies cost one round trip and are all-or-nothing: phase 1 reads every policy and decides,
// phase 2 writes only if every policy allowed (a denied request consumes from none).
//
// KEYS: one key per policy, all sharing the client's {hash tag}.
// ARGV: mode, cost, member id (sliding-window log entry), origin ms (refund: when the request was
//       counted), then per policy: algorithm code, limit, window ms.
// Reply: { allowed 0|1, now ms, then per policy: remaining, reset ms, retry ms }.
//   reset = until the quota is fully restored; retry = until a request of this cost could pass.
const LUA = `${LUA_NOW_MS}
local now_us = tonumber(__t[1]) * 1000000 + tonumber(__t[2])
local mode = ARGV[1]
local cost = tonumber(ARGV[2])
local member = ARGV[3]
local origin = tonumber(ARGV[4])
local consume = mode == 'c'
local refund = mode == 'r'
local peek = mode == 'p'
local function int(x) return string.format('%.0f', x) end

-- fixed-window: hash { s = window start ms, n = units used }; expires at the window end.
local function fixed(key, limit, win, st)
  local start = now_ms - (now_ms % win)
  local h = redis.call('HMGET', key, 's', 'n')
  local used = 0
  if tonumber(h[1]) == start then used = tonumber(h[2]) or 0 end
  local left = start + win - now_ms
  if refund then
    -- Only the window the request was counted in can give it back.
    if used > 0 and origin - (origin % win) == start then
      redis.call('HSET', key, 'n', int(math.max(0, used - cost)))
    end
    return
  end
  st.ok = used + cost <= limit
  st.rem = limit - used
  st.reset = used > 0 and left or 0
  st.retry = st.ok and 0 or left
  st.rem2 = limit - used - cost
  st.reset2 = left
  st.write = function()
    redis.call('HSET', key, 's', int(start), 'n', int(used + cost))
    redis.call('PEXPIRE', key, left)
  end
end

-- sliding-window (exact log): sorted set of entries "<cost>:<id>" scored by time ms; member "#"
-- holds minus the live sum as its score, so the sum is O(1) to read and never matches a time range.
local function sliding(key, limit, win, st)
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
  if refund then
    if redis.call('ZREM', key, cost .. ':' .. member) == 1 then
      redis.call('ZINCRBY', key, cost, '#')
    end
    return
  end
  st.ok = sum + cost <= limit
  st.rem = limit - sum
  st.reset = 0
  if sum > 0 then
    local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    local t = tonumber(newest[2])
    if t and t > 0 then st.reset = t + win - now_ms end
  end
  st.retry = 0
  if not st.ok then
    -- Walk the oldest entries until enough cost has expired; each entry is >= 1 unit, so 'need'
    -- entries always suffice when the request can pass at all.
    local need = sum + cost - limit
    local oldest = redis.call('ZRANGEBYSCORE', key, '(' .. cutoff, '+inf', 'WITHSCORES', 'LIMIT', 0, need)
    local freed = 0
    st.retry = win
    for i = 1, #oldest, 2 do
      freed = freed + tonumber(string.match(oldest[i], '^(%d+)'))
      if freed >= need then
        st.retry = tonumber(oldest[i + 1]) + win - now_ms
        break
      end
    end
  end
  st.rem2 = limit - sum - cost
  st.reset2 = win
  st.write = function()
    redis.call('ZADD', key, now_ms, cost .. ':' .. member)
    redis.call('ZADD', key, -(sum + cost), '#')
    redis.call('PEXPIRE', key, win)
  end
end

-- token-bucket: hash { k = tokens x window (integers, no float drift), t = last update ms }.
-- Refill is 'limit' scaled units per ms, capacity limit x window.
local function bucket(key, limit, win, st)
  local cap = limit * win
  local h = redis.call('HMGET', key, 'k', 't')
  local tk = cap
  if h[1] then tk = math.min(cap, tonumber(h[1]) + math.max(0, now_ms - tonumber(h[2])) * limit) end
  local need = cost * win
  if refund then
    if h[1] then
      local back = math.min(cap, tk + need)
      redis.call('HSET', key, 'k', int(back), 't', int(now_ms))
      redis.call('PEXPIRE', key, math.max(1, math.ceil((cap - back) / limit)))
    end
    return
  end
  st.ok = tk >= need
  st.rem = math.floor(tk / win)
  st.reset = math.ceil((cap - tk) / limit)
  st.retry = st.ok and 0 or math.ceil((need - tk) / limit)
  local after = tk - need
  st.rem2 = math.floor(after / win)
  st.reset2 = math.ceil((cap - after) / limit)
  st.write = function()
    redis.call('HSET', key, 'k', int(after), 't', int(now_ms))
    redis.call('PEXPIRE', key, math.max(1, st.reset2))
  end
end

-- gcra: one string, the theoretical arrival time in microseconds. Emission interval T = window/limit
-- (rounded to 1 us), burst tolerance limit x T.
local function gcra(key, limit, win, st)
  local T = math.max(1, math.floor(win * 1000 / limit + 0.5))
  local tau = T * limit
  local tat = tonumber(redis.call('GET', key)) or now_us
  if tat < now_us then tat = now_us end
  if refund then
    local back = math.max(now_us, tat - cost * T)
    if back > now_us then
      redis.call('SET', key, int(back), 'PX', math.max(1, math.ceil((back - now_us) / 1000)))
    else
      redis.call('DEL', key)
    end
    return
  end
  local new_tat = tat + cost * T
  st.ok = new_tat - now_us <= tau
  st.rem = math.floor((tau - (tat - now_us)) / T)
  st.reset = math.ceil((tat - now_us) / 1000)
  st.retry = st.ok and 0 or math.ceil((new_tat - tau - now_us) / 1000)
  st.rem2 = math.floor((tau - (new_tat - now_us)) / T)
  st.reset2 = math.ceil((new_tat - now_us) / 1000)
  st.write = function()
    redis.call('SET', key, int(new_tat), 'PX', math.max(1, st.reset2))
  end
end

local run = { f = fixed, s = sliding, t = bucket, g = gcra }
local states = {}
local allowed = true
for i = 1, #KEYS do
  local b = 4 + (i - 1) * 3
  local st = {}
  run[ARGV[b + 1]](KEYS[i], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), st)
  states[i] = st
  if st.ok == false then allowed = false end
end
if refund then return { 1, now_ms } end

local commit = consume and allowed
local out = { allowed and 1 or 0, now_ms }
for i = 1, #states do
  local st = states[i]
  if commit then
    st.write()
    out[#out + 1] = st.rem2
    out[#out + 1] = st.reset2
  else
    out[#out + 1] = math.max(0, st.rem)
    out[#out + 1] = st.reset
  end
  out[#out + 1] = st.retry
end
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
    script = defineScript(`rate_limit_v1_${policies}`, policies, LUA);
    byKeyCount.set(policies, script);
  }
  return script;
}
