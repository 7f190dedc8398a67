-- A scheduler takes up a recorded outcome that an agent (or a client's cancel) announced,
-- and follows it (_lib's follow). Duplicate and late announcements change nothing.
-- KEYS: the job script's six. A: Advance (records.py). Returns what follows.
local c = job_context()
local lease = redis.call('HGET', KEYS[2], 'lease')
local status = redis.call('HGET', c.job, 'status')
-- (A.lease is left out of the input when 0: a delayed step's, stopped before it started.)
if status and not JOB_TERMINAL[status] and lease ~= tostring(A.lease or 0) then
  return reply({kind = 'stale', why = 'superseded'})
end
return reply(follow(c, A.step))
