-- Marks the holds of executions whose usage a replica has just seen in
-- ClickHouse with the instant (Valkey time) they were first seen; a hold
-- already seen keeps its first stamp. KEYS[1]: the tenant's holds hash;
-- ARGV: execution ids. Returns how many holds were stamped now.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wanted = {}
for i = 1, #ARGV do
  wanted[ARGV[i]] = true
end
local stamped = 0
local all = redis.call('HGETALL', KEYS[1])
for j = 1, #all, 2 do
  local expires, seen, rest, hexec, tail = string.match(all[j + 1], '^(%d+)|(%d+)|(%d+|[^|]*)|([^|]*)|(.*)$')
  if seen == '0' and wanted[hexec] then
    redis.call('HSET', KEYS[1], all[j], expires .. '|' .. string.format('%.0f', now) .. '|' .. rest .. '|' .. hexec .. '|' .. tail)
    stamped = stamped + 1
  end
end
return stamped
