-- Ends one reservation early (DELETE /v1/usage/reservations/{id}).
-- KEYS[1]: the tenant's holds hash; ARGV[1]: reservation id.
-- Returns 1 if it was live. A hold whose usage was already seen stays
-- until every replica counts that usage (deleting it now could let a
-- replica with older counters count the call zero times); it is reported
-- as released, since the budget it holds is now the call's usage.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then
  return 0
end
local expires, seen = string.match(v, '^(%d+)|(%d+)|')
if tonumber(expires) <= now then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
if seen == '0' then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
