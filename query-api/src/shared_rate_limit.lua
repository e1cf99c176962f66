-- One request of one API key against its rate budget (GCRA: the
-- theoretical arrival time of the next request, equivalent to a token
-- bucket of `burst` tokens refilled at `rate` per second) and its
-- concurrency cap (leased slots that expire, so a replica that dies cannot
-- leak them), shared by every API replica. See docs/security.md.
-- KEYS[1]: the GCRA key (theoretical arrival time, Valkey microseconds)
-- KEYS[2]: the in-flight sorted set (lease id -> lease expiry)
-- ARGV: 1 rate per second (0 = unlimited), 2 burst, 3 concurrency cap
--       (0 = unlimited), 4 lease lifetime us, 5 lease id
-- Returns {'ok', 0}, {'concurrency', 0} or {'rate', microseconds to wait}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate, burst, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= cap then
    return {'concurrency', 0}
  end
end
if rate > 0 then
  local interval = 1000000 / rate
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat < now then
    tat = now
  end
  local new_tat = tat + interval
  local allow_at = new_tat - burst * interval
  if allow_at > now then
    return {'rate', math.ceil(allow_at - now)}
  end
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
end
if cap > 0 then
  redis.call('ZADD', KEYS[2], string.format('%.0f', now + lease), ARGV[5])
  redis.call('PEXPIRE', KEYS[2], math.ceil(lease / 1000) + 1000)
end
return {'ok', 0}
