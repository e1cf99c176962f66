-- The epoch of the shared state: detects that Valkey lost its data (a
-- restart without persistence, a flush) and fences reservations until
-- every hold that may have been lost has expired. See docs/limits.md.
-- KEYS[1]: the epoch hash (id, fence_until, wiped_at; times in Valkey
--          microseconds).
-- ARGV[1]: the epoch id this replica knows ('' if it knows none yet)
-- ARGV[2]: a fresh id, used if the epoch has to be (re)created
-- ARGV[3]: fence after a detected loss (one hold lifetime), microseconds
-- ARGV[4]: fence when a replica that knows no epoch finds none (first use,
--          or a loss no replica has noticed yet), microseconds
-- Returns {now, id, fence_until, wiped_at}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local known = ARGV[1]
local e = redis.call('HMGET', KEYS[1], 'id', 'fence_until', 'wiped_at')
local id, fence, wiped = e[1], tonumber(e[2] or '0'), tonumber(e[3] or '0')
if not id then
  id = ARGV[2]
  if known == '' then
    fence = now + tonumber(ARGV[4])
  else
    fence = now + tonumber(ARGV[3])
  end
  wiped = now
  redis.call('HSET', KEYS[1], 'id', id, 'fence_until', string.format('%.0f', fence), 'wiped_at', string.format('%.0f', wiped))
elseif known ~= '' and known ~= id then
  local until_ = now + tonumber(ARGV[3])
  if until_ > fence then
    fence = until_
    redis.call('HSET', KEYS[1], 'fence_until', string.format('%.0f', fence))
  end
end
return {now, id, fence, wiped}
