-- An agent claims the attempt it was sent: DISPATCHED -> RUNNING, its lease runs from now.
-- The step's retry policy, as the agent resolved it (the step's own choices, its task's
-- defaults, the fleet's), is stored with it: from here on the scripts decide by it.
-- KEYS: the job script's six, then [7] the agent's steps
-- A.digest (the SHA-1 of the delivered message) must match the recorded dispatch's, so
-- that a forged or altered message never runs: rejected with `mismatch`.
-- A: Claim (records.py). Returns Claimed, or Rejected (recorded in the history).
local c = job_context()
local s = redis.call('HMGET', KEYS[2], 'status', 'lease', 'attempt', 'timeout_s', 'close_by')
if s[1] == false then return reply({kind = 'rejected', status = 'missing', lease = 0}) end
local job_status = redis.call('HGET', c.job, 'status')
if s[2] ~= tostring(A.lease) or not may('claim', s[1]) or JOB_TERMINAL[job_status] then
  history(c.hist, c.now, c.by, 'claim_rejected', A.step, tonumber(s[3]), A.lease, s[1], nil,
    'current lease ' .. s[2])
  return reply({kind = 'rejected', status = s[1], lease = tonumber(s[2])})
end
if A.digest and A.digest ~= redis.call('HGET', KEYS[2], 'dispatch_digest') then
  history(c.hist, c.now, c.by, 'claim_rejected', A.step, tonumber(s[3]), A.lease, s[1], nil,
    'the dispatch does not match the recorded step')
  return reply({kind = 'rejected', status = s[1], lease = tonumber(s[2]), mismatch = true})
end
local attempt_deadline = c.now + ms(s[4])
if s[5] then attempt_deadline = math.min(attempt_deadline, tonumber(s[5])) end
local complete_by = math.min(c.now + A.lease_ms, attempt_deadline)
move_step(KEYS[2], 'claim', s[1], 'locked_by', c.by, 'started_at', c.now,
  'attempt_deadline', attempt_deadline, 'complete_by', complete_by, 'policy', A.policy)
redis.call('HSET', c.job, 'updated_at', c.now)
local member = c.id .. '|' .. A.step
redis.call('ZADD', c.deadlines, complete_by, member)
redis.call('SADD', KEYS[7], member)
history(c.hist, c.now, c.by, 'claim', A.step, tonumber(s[3]), A.lease, s[1], STEP.RUNNING, nil)
return reply({kind = 'claimed'})
