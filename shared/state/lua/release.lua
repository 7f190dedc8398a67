-- An agent shutting down hands back a step it could not finish: RUNNING -> DISPATCHED with
-- a new lease (fencing out the handler it stopped) and the same attempt number, since the
-- attempt was cut short rather than failed.
-- KEYS: the job script's six, then [7] the agent's steps
-- A: Release (records.py). Returns a DispatchOrder, or Stale when the lease is gone.
local c = job_context()
redis.call('SREM', KEYS[7], c.id .. '|' .. A.step)
local s = redis.call('HMGET', KEYS[2], 'status', 'lease', 'attempt')
if not may('release', s[1]) or s[2] ~= tostring(A.lease) then
  return reply({kind = 'stale', why = 'lease gone'})
end
return reply(dispatch(c, KEYS[2], A.step, tonumber(s[3]), 'release', 'agent shutting down'))
