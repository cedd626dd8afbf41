// Lua for the two window algorithms of the rate-limit script (script.ts): each is a function that
// loads its key once and answers { check, take, save, refund } for the script's driver. It runs after
// the script's prelude (now_ms, now_us, peek, int).
export const LUA_WINDOWS = `
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

-- sliding-window (exact log): sorted set of entries "<cost>:<id>" scored by time us; member "#"
-- holds minus the sum of every entry still stored as its score, so the sum is O(1) to read and never
-- matches a time range.
-- Expired entries are cleared at most SLIDING_CLEAR per step, so the first call after a large burst
-- has left the window does not block Redis for one walk over the whole burst (100,000 entries took
-- 90 ms). Entries not cleared yet (the backlog) still count in the sum; a decision counts each of them
-- as one unit, the least an entry holds, which is exact when costs are 1. Only when that bound would
-- deny a request that the live entries alone might admit (costs above 1) does the call clear more.
local SLIDING_CLEAR = 1000
local function sliding(key, limit, win)
  -- In us, as Redis reads its clock: in whole ms, two requests 0.999 ms and 1.000 ms into a second
  -- would be a full ms apart, and a window could admit one more than limit.
  local win_us = win * 1000
  local cutoff = int(now_us - win_us)
  local stored = tonumber(redis.call('ZSCORE', key, '#'))
  local sum = -(stored or 0)
  local read = 0
  local backlog = 0
  local function clear()
    local expired = redis.call('ZRANGEBYSCORE', key, '(0', cutoff, 'LIMIT', peek and read or 0, SLIDING_CLEAR)
    for i = 1, #expired do sum = sum - tonumber(string.match(expired[i], '^(%d+)')) end
    if sum < 0 then sum = 0 end
    read = read + #expired
    backlog = 0
    if #expired == SLIDING_CLEAR then
      backlog = redis.call('ZCOUNT', key, '(0', cutoff) - (peek and read or #expired)
    end
    if #expired > 0 and not peek then
      redis.call('ZREM', key, unpack(expired))
      redis.call('ZADD', key, -sum, '#')
    end
  end
  clear()
  -- Time of the newest live entry, read once and only when a reply needs it.
  local newest = nil
  local dirty = false
  local P = {}
  function P.check(cost, r)
    while backlog > 0 and sum - backlog + cost > limit
      and redis.call('ZCOUNT', key, '(' .. cutoff, '+inf') + cost <= limit do
      clear()
    end
    local live = math.max(0, sum - backlog)
    r.ok = live + cost <= limit
    r.rem = limit - live
    r.reset = 0
    if live > 0 then
      if newest == nil then
        local e = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
        newest = tonumber(e[2]) or 0
      end
      if newest > 0 then r.reset = math.ceil((newest + win_us - now_us) / 1000) end
    end
    r.retry = 0
    if not r.ok then
      -- Walk the oldest entries until enough cost has expired; each entry is >= 1 unit, so 'need'
      -- entries always suffice when the request can pass at all. Entries taken earlier in this
      -- batch are already in the set.
      local need = live + cost - limit
      if backlog > 0 then
        -- While expired entries remain, live is an upper bound, and would put the wait too far
        -- out. Counted from the live entries alone (one unit each at least) it never says later
        -- than the truth, and Redis decides afresh when the client comes back.
        need = redis.call('ZCOUNT', key, '(' .. cutoff, '+inf') + cost - limit
      end
      local oldest = redis.call('ZRANGEBYSCORE', key, '(' .. cutoff, '+inf', 'WITHSCORES', 'LIMIT', 0, int(need))
      local freed = 0
      r.retry = win
      for i = 1, #oldest, 2 do
        freed = freed + tonumber(string.match(oldest[i], '^(%d+)'))
        if freed >= need then
          r.retry = math.ceil((tonumber(oldest[i + 1]) + win_us - now_us) / 1000)
          break
        end
      end
    end
    r.rem2 = limit - live - cost
    r.reset2 = win
  end
  function P.counted(cost, member)
    return redis.call('ZSCORE', key, int(cost) .. ':' .. member) ~= false
  end
  function P.take(cost, member)
    -- A call whose reply was lost is sent again by ioredis, and Redis runs it twice: the entry is
    -- there already, and counting it again would leave a unit in the total that no entry takes
    -- out when it expires, for as long as the client keeps the key alive.
    if redis.call('ZADD', key, 'NX', int(now_us), int(cost) .. ':' .. member) == 1 then
      sum = sum + cost
      newest = now_us
      dirty = true
    end
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
      -- Nothing left but the total: the same as no key at all (gcra does the same), and no memory
      -- held for a window by a client whose every request was given back.
      if redis.call('ZCARD', key) == 1 then redis.call('DEL', key) end
    end
  end
  return P
end
`;
