import { defineScript, LUA_NOW_MS, type ScriptDefinition } from '../scripts';
import { LUA_RATES } from './script-rates';
import { LUA_WINDOWS } from './script-windows';

/** Algorithm codes as the Lua script reads them (one byte each keeps ARGV small). */
export const ALGORITHM_CODE = {
  'fixed-window': 'f',
  'sliding-window': 's',
  'token-bucket': 't',
  gcra: 'g',
} as const;

/**
 * The algorithm's part of a key name. token-bucket and gcra changed their stored state when refunds
 * stopped giving back too much (it was a hash under 't' and one number under 'g'), and sliding-window
 * when its log went from ms to us; new names keep instances of the two versions from misreading each
 * other's keys during a rolling deploy (each version counts on its own until the old one is gone).
 */
export const KEY_CODE = {
  'fixed-window': 'f',
  'sliding-window': 's2',
  'token-bucket': 't2',
  gcra: 'g2',
} as const;

/** Script modes. */
export const MODE_CONSUME = 'c';
export const MODE_REFUND = 'r';
export const MODE_PEEK = 'p';

// The rate-limit script. Each algorithm is one Lua function (script-windows.ts: fixed-window and
// sliding-window; script-rates.ts: token-bucket and gcra) that loads its key once and returns a small
// object: check (what a request of this cost would get), take (count it, in memory, and answer its
// refund hints), save (write once at the end) and refund (in memory too; save writes it). The driver
// below runs a list of policies of any mix over a batch of requests for the same client, in order,
// exactly as if they had arrived one after another at the same instant: several policies and several
// requests cost one round trip. A request is allowed only if every policy allows it, and a denied
// request consumes from none.
//
// KEYS: one key per policy, all sharing the client's {hash tag}; refunds add a marker key (same tag,
//       unique per refund call).
// ARGV: mode, then per policy: algorithm code, limit, window ms; for refunds the deadline (Redis ms);
//       then per request: cost, member id (sliding-window log entry) and, for refunds only, origin ms
//       (when the request was counted) and the request's refund hints (four per policy: gap,
//       refunded, units, key stamp).
// Reply: per request { allowed 0|1, now ms, per policy: remaining, reset ms, retry ms, then per
//   policy: three more refund hints }; refund: { 1, now ms } given back (now or by an earlier copy of
//   the same call), { 0, now ms } refused: past its deadline.
//   reset = until the quota is fully restored; retry = until a request of this cost could pass.
//   A counted request has no retry, so that slot carries its first refund hint (gap) instead.
//
// Refunds give back only what the request still holds, so they never let through more than the
// algorithm promises for the requests that were not refunded: a refund applies only to the key it
// was counted in (keys remember a creation stamp, which every counted request carries; once the key
// expired or reset() deleted it, the request holds nothing); fixed-window gives back within the
// window the request was counted in, sliding-window its own log entry if it has not expired, and
// token-bucket and gcra what time has not already restored (script-rates.ts explains how).
const LUA = `${LUA_NOW_MS}
local now_us = tonumber(__t[1]) * 1000000 + tonumber(__t[2])
local mode = ARGV[1]
local consume = mode == 'c'
local refund = mode == 'r'
local peek = mode == 'p'
local function int(x) return string.format('%.0f', x) end
${LUA_WINDOWS}${LUA_RATES}
local open = { f = fixed, s = sliding, t = bucket, g = gcra }
local count = refund and #KEYS - 1 or #KEYS
local first = 2 + 3 * count
if refund then
  -- ioredis sends a command again when the connection dropped before its reply came, and a command
  -- it gave up on (timeout) can still reach Redis: a refund applies only before its deadline (when
  -- the limiter stops waiting for it) and once, by its marker key, which lives until that deadline.
  local deadline = tonumber(ARGV[first])
  if now_ms > deadline then return { 0, now_ms } end
  if redis.call('EXISTS', KEYS[#KEYS]) == 1 then return { 1, now_ms } end
  -- A write first (a DEL of the absent marker): under OOM Redis refuses only a first write that may grow memory.
  redis.call('DEL', KEYS[#KEYS])
  redis.call('SET', KEYS[#KEYS], '1', 'PX', int(deadline - now_ms + 1))
  first = first + 1
end
local pols = {}
local st = {}
for i = 1, count do
  local b = 2 + (i - 1) * 3
  pols[i] = open[ARGV[b]](KEYS[i], tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]))
  st[i] = {}
end
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
  -- A call Redis runs a second time (its reply was lost and ioredis sent it again) finds the
  -- request's own sliding-window entry: it was allowed and counted then, in every policy. It is
  -- answered so again, counted once, with no refund hints (a refund then gives back its entry only).
  local again = false
  if consume and ARGV[q + 1] ~= '-' then
    for i = 1, count do
      if pols[i].counted and pols[i].counted(cost, ARGV[q + 1]) then again = true end
    end
  end
  if again then allowed = true end
  local commit = consume and allowed and not again
  out[#out + 1] = allowed and 1 or 0
  out[#out + 1] = now_ms
  for i = 1, count do
    local r = st[i]
    if again then
      out[#out + 1] = math.max(0, r.rem)
      out[#out + 1] = r.reset
      out[#out + 1] = 0
      r.h1, r.h2, r.h3 = 0, 0, 0
    elseif commit then
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
 * The rate-limit script for `policies` keys, plus one for refunds (their marker). One Lua body
 * serves every algorithm mix; it is registered once per key count because the registry (like ioredis
 * defineCommand) fixes the number of keys.
 */
export function rateLimitScript(policies: number, forRefunds = false): ScriptDefinition {
  const keys = forRefunds ? policies + 1 : policies;
  let script = byKeyCount.get(keys);
  if (!script) {
    script = defineScript(`rate_limit_v7_${keys}`, keys, LUA);
    byKeyCount.set(keys, script);
  }
  return script;
}
