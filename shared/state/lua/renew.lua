-- A running step's agent renews its lease (complete_by), never past the attempt's deadline,
-- and stores the handler's progress report if it sent one.
-- KEYS[1] step  KEYS[2] deadlines  KEYS[3] job
-- ARGV[1] deadline member  [2] lease  [3] now  [4] lease_ms  [5] allowed from (csv)
--     [6] progress (JSON or "")
-- Returns 1 renewed, 0 the lease is no longer current, 2 renewed but the job is cancelled
-- (never for a compensation).
local s = redis.call('HMGET', KEYS[1], 'status', 'lease', 'attempt_deadline')
if s[1] == false or s[2] ~= ARGV[2] or not allowed(ARGV[5], s[1]) then return 0 end
local complete_by = math.min(tonumber(ARGV[3]) + tonumber(ARGV[4]), tonumber(s[3]))
redis.call('HSET', KEYS[1], 'complete_by', complete_by)
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'progress', ARGV[6]) end
redis.call('ZADD', KEYS[2], 'XX', complete_by, ARGV[1])
-- A cancel stops forward steps; compensations (which undo them) must run to the end.
if redis.call('HGET', KEYS[3], 'cancel_requested') == '1'
    and not redis.call('HGET', KEYS[1], 'compensates') then return 2 end
return 1
