import { defineScript, LUA_NOW_MS, type ScriptDefinition } from '../scripts';

/** Algorithm codes as the Lua script reads them (one byte each keeps ARGV small). */
export const ALGORITHM_CODE = {
  'fixed-window': 'f',
  'sliding-window': 's',
  'token-bucket': 't',
  gcra: 'g',
} as const;

/**
 * The algorithm's part of a key name. token-bucket and gcra changed their stored state when refunds
 * stopped giving back too much (it was a hash under 't' and one number under 'g'); new names keep
 * instances of the two versions from misreading each other's keys during a rolling deploy (each
 * version counts on its own until the old one is gone).
 */
export const KEY_CODE = {
  'fixed-window': 'f',
  'sliding-window': 's',
  'token-bucket': 't2',
  gcra: 'g2',
} as const;

/** Script modes. */
export const MODE_CONSUME = 'c';
export const MODE_REFUND = 'r';
export const MODE_PEEK = 'p';

// Each algorithm is one Lua function below that loads its key once and returns a small object:
// check (what a request of this cost would get), take (count it, in memory, and answer a refund hint),
// save (write once at the end) and refund (in memory too; save writes it). A single script runs a list
// of policies of any mix over a batch of requests for the same client, in order, exactly as if they
// had arrived one after another at the same instant: several policies and several requests cost one
// round trip. A request is allowed only if every policy allows it, and a denied request consumes from
// none.
//
// KEYS: one key per policy, all sharing the client's {hash tag}.
// ARGV: mode, then per policy: algorithm code, limit, window ms; then per request: cost, member id
//       (sliding-window log entry) and, for refunds only, origin ms (when the request was counted)
//       and the request's refund hints (four per policy: gap, refunded, units, key stamp; below).
// Reply: per request { allowed 0|1, now ms, per policy: remaining, reset ms, retry ms, then per
//   policy: three more refund hints }; refund: { 1, now ms }.
//   reset = until the quota is fully restored; retry = until a request of this cost could pass.
//   A counted request has no retry, so that slot carries its first refund hint (gap) instead.
//
// Refunds give back only what the request still holds, so they never let through more than the
// algorithm promises for the requests that were not refunded:
// - A key remembers when it was created ('c', us on the Redis clock) and every request counted in it
//   carries that stamp as a hint. A refund only applies to the key it was counted in: once the key
//   expired (the quota was whole again) or reset() deleted it, the request holds nothing.
// - fixed-window: the window the request was counted in, if it is still the current one.
// - sliding-window: its own log entry, if it has not expired.
// - token-bucket and gcra: time heals a counted cost (a bucket refills, a tat falls behind the clock)
//   and a refund must not give back what time already restored. The exact answer needs the history;
//   instead the key keeps units counted ('u') and refunded ('r') and when it last counted ('l'), and
//   each counted request gets hints: gap (how far from whole the state was just before it took:
//   missing tokens, or tat ahead of the clock) and 'r' and 'u' at that moment. The state after a
//   refund is the tightest of three upper bounds on the state without the request (and without
//   every request refunded before it):
//     time: without it the state was whole again gap after origin, sooner by the cost refunded
//       since; the cost healed by refill past that point stays healed.
//     after: without it the state is at most gap from whole at origin plus the units counted since,
//       and no further from whole than counting all of those at the last count.
//     held: no further from whole than counting every unit still held at the last count.
//   Each errs towards giving back less; 'held' makes a client whose counted requests are all
//   refunded whole again. __tests__/rate-limit/refund-model.test.ts checks both against an exact model.
const LUA = `${LUA_NOW_MS}
local now_us = tonumber(__t[1]) * 1000000 + tonumber(__t[2])
local mode = ARGV[1]
local consume = mode == 'c'
local refund = mode == 'r'
local peek = mode == 'p'
local function int(x) return string.format('%.0f', x) end

-- fixed-window: hash { s = window start ms, n = units used, c = created us }; expires at the
-- window end.
local function fixed(key, limit, win)
  local start = now_ms - (now_ms % win)
  local h = redis.call('HMGET', key, 's', 'n', 'c')
  local used = 0
  local created = nil
  if tonumber(h[1]) == start then
    used = tonumber(h[2]) or 0
    created = tonumber(h[3]) or 0
  end
  local gen = created or now_us
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
    return 0, 0, 0, gen
  end
  function P.save()
    if not dirty then return end
    if created then
      redis.call('HSET', key, 's', int(start), 'n', int(used))
    else
      redis.call('HSET', key, 's', int(start), 'n', int(used), 'c', int(gen))
    end
    redis.call('PEXPIRE', key, left)
  end
  function P.refund(cost, member, origin, gap, r, u, g)
    -- Only the window (and key) the request was counted in can give it back.
    if created == g and used > 0 and origin - (origin % win) == start then
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

-- token-bucket and gcra keep their state as one string of integers, so a decision is one GET and
-- one SET PX.
-- token-bucket: "k t u r l c": k = tokens x window (integers, no float drift), t = when k was
-- computed ms, u = units counted, r = units refunded, l = last counted ms, c = created us.
-- Refill is 'limit' scaled units per ms, capacity limit x window.
local function bucket(key, limit, win)
  local cap = limit * win
  local tk, units, refunded, last, created = cap, 0, 0, 0, nil
  local v = redis.call('GET', key)
  if v then
    local k, t, u, r, l, c = string.match(v, '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')
    tk = math.min(cap, tonumber(k) + math.max(0, now_ms - tonumber(t)) * limit)
    units, refunded, last, created = tonumber(u), tonumber(r), tonumber(l), tonumber(c)
  end
  local gen = created or now_us
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
    local gap, r, u = cap - tk, refunded, units
    tk = tk - cost * win
    units = units + cost
    last = now_ms
    dirty = true
    return gap, r, u, gen
  end
  function P.save()
    if not dirty then return end
    local state = table.concat({ int(tk), int(now_ms), int(units), int(refunded), int(last), int(gen) }, ' ')
    redis.call('SET', key, state, 'PX', math.max(1, math.ceil((cap - tk) / limit)))
  end
  function P.refund(cost, member, origin, gap, r, u, g)
    local later = units - u - cost
    -- A request not counted in this key (another generation, or hints that do not fit its counters)
    -- holds nothing in it.
    if created ~= g or later < 0 then return end
    local need = cost * win
    local elapsed = (now_ms - origin) * limit
    local missing = cap - tk
    -- time: without this request the bucket would have been full again gap / limit ms after origin,
    -- sooner by the cost refunded since; refill past that point healed the cost for good.
    local bound = missing - need + math.max(0, elapsed - math.max(0, gap - (refunded - r) * win))
    -- after: at most gap short at origin plus the units counted since, and never more short than
    -- counting those at the last count.
    local after = gap - elapsed + later * win
    if later > 0 then after = math.max(after, (last - now_ms) * limit + later * win) end
    if after < bound then bound = after end
    -- held: never more short than counting every unit still held at the last count.
    local held = (last - now_ms) * limit + (units - refunded - cost) * win
    if held < bound then bound = held end
    refunded = refunded + cost
    dirty = true
    if bound < missing then tk = cap - math.max(0, bound) end
  end
  return P
end

-- gcra: "t u r l c": t = theoretical arrival time us, u = units counted, r = units refunded, l = last
-- counted us, c = created us. Emission interval T = window/limit (rounded to 1 us), burst tolerance
-- limit x T.
local function gcra(key, limit, win)
  local T = math.max(1, math.floor(win * 1000 / limit + 0.5))
  local tau = T * limit
  local tat, units, refunded, last, created = now_us, 0, 0, 0, nil
  local v = redis.call('GET', key)
  if v then
    local t, u, r, l, c = string.match(v, '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
    tat, units, refunded, last, created = tonumber(t), tonumber(u), tonumber(r), tonumber(l), tonumber(c)
    if tat < now_us then tat = now_us end
  end
  local gen = created or now_us
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
    local gap, r, u = tat - now_ms * 1000, refunded, units
    tat = tat + cost * T
    units = units + cost
    last = now_us
    dirty = true
    return gap, r, u, gen
  end
  function P.save()
    if not dirty then return end
    if tat > now_us then
      local state = table.concat({ int(tat), int(units), int(refunded), int(last), int(gen) }, ' ')
      redis.call('SET', key, state, 'PX', math.max(1, math.ceil((tat - now_us) / 1000)))
    else
      -- Refunded back to a full burst: the same as no key at all.
      redis.call('DEL', key)
    end
  end
  function P.refund(cost, member, origin, gap, r, u, g)
    local later = units - u - cost
    if created ~= g or later < 0 then return end
    local start = origin * 1000
    -- time: without this request the tat would have been start + gap, earlier by the cost refunded
    -- since; once the clock passed that, time healed the cost.
    local bound = tat - cost * T + math.max(0, now_us - (start + math.max(0, gap - (refunded - r) * T)))
    -- after: at most start + gap plus the units counted since, and never later than counting those
    -- at the last count.
    local after = start + gap + later * T
    if later > 0 then after = math.max(after, last + later * T) end
    if after < bound then bound = after end
    -- held: never later than counting every unit still held at the last count.
    local held = last + (units - refunded - cost) * T
    if held < bound then bound = held end
    refunded = refunded + cost
    dirty = true
    if bound < tat then tat = math.max(now_us, bound) end
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
  for q = first, #ARGV, 3 + 4 * count do
    local cost, origin = tonumber(ARGV[q]), tonumber(ARGV[q + 2])
    for i = 1, count do
      local h = q + 4 * i - 1
      local gap, r, u, g = tonumber(ARGV[h]), tonumber(ARGV[h + 1]), tonumber(ARGV[h + 2]), tonumber(ARGV[h + 3])
      pols[i].refund(cost, ARGV[q + 1], origin, gap, r, u, g)
    end
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
      local gap, refunded, units, gen = pols[i].take(cost, ARGV[q + 1])
      out[#out + 1] = r.rem2
      out[#out + 1] = r.reset2
      out[#out + 1] = gap
      r.h1, r.h2, r.h3 = refunded or 0, units or 0, gen or 0
    else
      out[#out + 1] = math.max(0, r.rem)
      out[#out + 1] = r.reset
      out[#out + 1] = r.retry
      r.h1, r.h2, r.h3 = 0, 0, 0
    end
  end
  for i = 1, count do
    out[#out + 1] = st[i].h1
    out[#out + 1] = st[i].h2
    out[#out + 1] = st[i].h3
  end
end
for i = 1, count do pols[i].save() end
return out
`;

/** The script body (internal; the refund model test runs it on a simulated clock). */
export const RATE_LIMIT_LUA = LUA;

const byKeyCount = new Map<number, ScriptDefinition>();

/**
 * The rate-limit script for `policies` keys. One Lua body serves every algorithm mix; it is registered
 * once per policy count because the registry (like ioredis defineCommand) fixes the number of keys.
 */
export function rateLimitScript(policies: number): ScriptDefinition {
  let script = byKeyCount.get(policies);
  if (!script) {
    script = defineScript(`rate_limit_v5_${policies}`, policies, LUA);
    byKeyCount.set(policies, script);
  }
  return script;
}
