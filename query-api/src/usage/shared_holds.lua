-- One check against the reservations of one tenant, shared by every API
-- replica: counts the holds that apply, decides, and (reserve) records the
-- new hold, atomically. See docs/limits.md ("Several replicas").
-- KEYS[1]: the tenant's holds hash (field = reservation id)
-- KEYS[2]: the epoch hash
-- ARGV: 1 epoch id known by the caller, 2 the caller's snapshot start
--       (Valkey microseconds), 3 'reserve' or 'check', 4 metric, 5 units,
--       6 hold lifetime us, 7 linger us, 8 settle us, 9 new reservation id,
--       10 execution id or '', 11 n limits, then n pairs (subject, budget =
--       max - used in the caller's counters).
-- A hold is "expires|seen|units|metric|execution|subject subject ...";
-- seen = 0 until a replica saw its execution in ClickHouse.
-- Returns {status, allowed, now, held_1 .. held_n}; status is ok, fenced
-- (the store was lost recently), stale (the caller's counters are too old
-- to count seen holds correctly) or epoch (the caller must re-probe).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ep = redis.call('HMGET', KEYS[2], 'id', 'fence_until', 'wiped_at')
if (not ep[1]) or ep[1] ~= ARGV[1] then
  return {'epoch', 0, now}
end
local fence, wiped = tonumber(ep[2] or '0'), tonumber(ep[3] or '0')
local snapshot = tonumber(ARGV[2])
local reserve = ARGV[3] == 'reserve'
local metric = ARGV[4]
local units = tonumber(ARGV[5])
local ttl, linger, settle = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local exec = ARGV[10]
local n = tonumber(ARGV[11])
local index, held, budget, names = {}, {}, {}, {}
for i = 1, n do
  index[ARGV[10 + 2 * i]] = i
  names[i] = ARGV[10 + 2 * i]
  budget[i] = tonumber(ARGV[11 + 2 * i])
  held[i] = 0
end
local replaced = nil
local all = redis.call('HGETALL', KEYS[1])
for j = 1, #all, 2 do
  local id, v = all[j], all[j + 1]
  local expires, seen, hunits, hmetric, hexec, hsubjects = string.match(v, '^(%d+)|(%d+)|(%d+)|([^|]*)|([^|]*)|(.*)$')
  expires, seen = tonumber(expires), tonumber(seen)
  if expires == nil or expires <= now then
    redis.call('HDEL', KEYS[1], id)
  elseif seen > 0 and seen + settle + linger < now then
    -- Every replica allowed to decide has a snapshot newer than this.
    redis.call('HDEL', KEYS[1], id)
  elseif reserve and exec ~= '' and hexec == exec then
    -- A retried reserving check for the same execution replaces its hold.
    replaced = id
  elseif hmetric == metric and not (seen > 0 and seen + settle < snapshot) then
    for s in string.gmatch(hsubjects, '%S+') do
      local i = index[s]
      if i then
        held[i] = held[i] + tonumber(hunits)
      end
    end
  end
end
local status = 'ok'
if fence > now then
  status = 'fenced'
elseif snapshot <= wiped or snapshot + linger < now then
  status = 'stale'
end
local allowed = 1
for i = 1, n do
  if held[i] + units > budget[i] then
    allowed = 0
  end
end
if reserve and status == 'ok' then
  if replaced then
    redis.call('HDEL', KEYS[1], replaced)
  end
  if allowed == 1 and n > 0 then
    local value = string.format('%.0f', now + ttl) .. '|0|' .. ARGV[5] .. '|' .. metric .. '|' .. exec .. '|' .. table.concat(names, ' ')
    redis.call('HSET', KEYS[1], ARGV[9], value)
    -- The hash outlives its newest hold (lifetime plus linger) and then goes.
    redis.call('PEXPIRE', KEYS[1], math.floor((ttl + linger) / 1000) + 60000)
  end
end
local out = {status, allowed, now}
for i = 1, n do
  out[3 + i] = held[i]
end
return out
