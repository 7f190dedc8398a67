-- A running step's agent renews its lease (complete_by), never past the attempt's deadline,
-- and stores the handler's progress report if it sent one.
-- KEYS[1] step  KEYS[2] deadlines  KEYS[3] job. A: Renew (records.py).
-- Returns Renewal: renewed, lost (the lease is no longer current), or cancel_requested
-- (renewed, but the job is cancelled; never for a compensation).
local s = redis.call('HMGET', KEYS[1], 'status', 'lease', 'attempt_deadline', 'compensates')
if s[1] ~= STEP.RUNNING or s[2] ~= tostring(A.lease) then
  return reply({outcome = 'lost'})
end
local complete_by = math.min(A.now + A.lease_ms, tonumber(s[3]))
redis.call('HSET', KEYS[1], 'complete_by', complete_by)
if A.progress then redis.call('HSET', KEYS[1], 'progress', A.progress) end
redis.call('ZADD', KEYS[2], 'XX', complete_by, A.member)
-- A cancel stops forward steps; compensations (which undo them) must run to the end.
if not s[4] and redis.call('HGET', KEYS[3], 'cancel_requested') == '1' then
  return reply({outcome = 'cancel_requested'})
end
return reply({outcome = 'renewed'})
