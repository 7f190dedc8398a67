-- A running step's agent renews its lease (complete_by), never past the attempt's deadline.
-- KEYS[1] step  KEYS[2] deadlines
-- ARGV[1] deadline member  [2] lease  [3] now  [4] lease_ms  [5] allowed from (csv)
-- Returns 1 when renewed, 0 when the lease is no longer current.
local s = redis.call('HMGET', KEYS[1], 'status', 'lease', 'attempt_deadline')
if s[1] == false or s[2] ~= ARGV[2] or not allowed(ARGV[5], s[1]) then return 0 end
local complete_by = math.min(tonumber(ARGV[3]) + tonumber(ARGV[4]), tonumber(s[3]))
redis.call('HSET', KEYS[1], 'complete_by', complete_by)
redis.call('ZADD', KEYS[2], 'XX', complete_by, ARGV[1])
return 1
