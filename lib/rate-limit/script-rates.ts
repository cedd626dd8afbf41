// Lua for the two rate algorithms of the rate-limit script (script.ts), token-bucket and gcra, and the
// refund bookkeeping they share. Each algorithm is a function that loads its key once and answers
// { check, take, save, refund } for the script's driver. It runs after the script's prelude (now_ms,
// now_us, int).
//
// Refunds: time heals a counted cost (a bucket refills, a tat falls behind the clock) and a refund
// must not give back what time already restored. The exact answer needs the history; instead a key
// keeps units counted ('u') and refunded ('r'), when it last counted ('l') and its creation stamp
// ('c', us), and each counted request gets hints: gap (how far from whole the state was just before
// it took: missing tokens, or tat ahead of the clock), and 'r', 'u' and 'c' at that moment. The state
// after a refund is the tightest of three upper bounds on the state without the request (and without
// every request refunded before it):
//   time: without it the state was whole again gap after origin, sooner by the cost refunded since;
//     the cost healed by refill past that point stays healed.
//   after: without it the state is at most gap from whole at origin plus the units counted since, and
//     no further from whole than counting all of those at the last count.
//   held: no further from whole than counting every unit still held at the last count.
// Each errs towards giving back less; 'held' makes a client whose counted requests are all refunded
// whole again. __tests__/rate-limit/refund-model.test.ts checks both against an exact model.
export const LUA_RATES = `
-- The refund counters of a token-bucket or gcra key, from its stored fields (all nil: a new key).
local function ledger(u, r, l, c)
  local created = tonumber(c)
  return { units = tonumber(u) or 0, refunded = tonumber(r) or 0, last = tonumber(l) or 0,
    created = created, gen = created or now_us }
end

-- Counts 'cost' at time 'now' (the state's own clock) and answers the request's refund hints.
local function ledger_take(L, gap, cost, now)
  local r, u = L.refunded, L.units
  L.units = u + cost
  L.last = now
  return gap, r, u, L.gen
end

-- How far from whole the state may be after refunding a request of 'cost', in the state's units:
-- 'ahead' is how far it is now, one cost unit is 'unit', clock time converts at 'rate' units per
-- tick of 'now' / 'origin'. Answers nil when the request holds nothing in this key (another
-- generation, or hints that do not fit its counters).
local function ledger_refund(L, ahead, cost, unit, rate, now, origin, gap, r, u, g)
  local later = L.units - u - cost
  if L.created ~= g or later < 0 then return nil end
  local elapsed = (now - origin) * rate
  local last_ago = (now - L.last) * rate
  local time = ahead - cost * unit + math.max(0, elapsed - math.max(0, gap - (L.refunded - r) * unit))
  local after = gap - elapsed + later * unit
  if later > 0 then after = math.max(after, later * unit - last_ago) end
  local held = (L.units - L.refunded - cost) * unit - last_ago
  L.refunded = L.refunded + cost
  return math.max(0, math.min(ahead, time, after, held))
end

-- Both keep their state as one string of integers, so a decision is one GET and one SET PX.
-- token-bucket: "k t u r l c": k = tokens x window (integers, no float drift), t = when k was
-- computed ms, then the ledger (l in ms). Refill is 'limit' scaled units per ms, capacity
-- limit x window.
local function bucket(key, limit, win)
  local cap = limit * win
  -- A missing key matches nothing: every field nil, a full bucket and a fresh ledger.
  local k, t, u, r, l, c = string.match(redis.call('GET', key) or '', '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')
  local tk = k and math.min(cap, tonumber(k) + math.max(0, now_ms - tonumber(t)) * limit) or cap
  local L = ledger(u, r, l, c)
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
    local gap = cap - tk
    tk = tk - cost * win
    dirty = true
    return ledger_take(L, gap, cost, now_ms)
  end
  function P.save()
    if not dirty then return end
    local state = table.concat({ int(tk), int(now_ms), int(L.units), int(L.refunded), int(L.last), int(L.gen) }, ' ')
    redis.call('SET', key, state, 'PX', math.max(1, math.ceil((cap - tk) / limit)))
  end
  function P.refund(cost, member, origin, gap, r, u, g)
    local missing = ledger_refund(L, cap - tk, cost, win, limit, now_ms, origin, gap, r, u, g)
    if not missing then return end
    tk = cap - missing
    dirty = true
  end
  return P
end

-- gcra: "t u r l c": t = theoretical arrival time us, then the ledger (l in us). Emission interval
-- T = window/limit in whole us (options keep it >= 100 us), burst tolerance limit x T.
local function gcra(key, limit, win)
  local T = math.max(1, math.floor(win * 1000 / limit + 0.5))
  local tau = T * limit
  local t, u, r, l, c = string.match(redis.call('GET', key) or '', '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
  local tat = t and math.max(now_us, tonumber(t)) or now_us
  local L = ledger(u, r, l, c)
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
    -- gap relative to the request's origin ms, which is what a refund gets back.
    local gap = tat - now_ms * 1000
    tat = tat + cost * T
    dirty = true
    return ledger_take(L, gap, cost, now_us)
  end
  function P.save()
    if not dirty then return end
    if tat > now_us then
      local state = table.concat({ int(tat), int(L.units), int(L.refunded), int(L.last), int(L.gen) }, ' ')
      redis.call('SET', key, state, 'PX', math.max(1, math.ceil((tat - now_us) / 1000)))
    else
      -- Refunded back to a full burst: the same as no key at all.
      redis.call('DEL', key)
    end
  end
  function P.refund(cost, member, origin, gap, r, u, g)
    local ahead = ledger_refund(L, tat - now_us, cost, T, 1, now_us, origin * 1000, gap, r, u, g)
    if not ahead then return end
    tat = now_us + ahead
    dirty = true
  end
  return P
end
`;
