-- An agent records the outcome of its attempt: RUNNING -> SUCCEEDED | FAILED.
-- Only the holder of the current lease may; a late result is rejected and recorded.
-- With A.advance, a success of a running job's forward step is followed at once (_lib's
-- follow: the next step's dispatch, for the agent to publish, or the job's end), sparing
-- the scheduler round trip; every other outcome is announced to a scheduler, which
-- follows it. Either way the step stays in the deadline set (at A.announce_at) until the
-- follow-up is published, so a supervisor repairs a publish that never happened.
-- KEYS: the job script's six, then [7] the agent's steps
-- A: Record (records.py). Returns Recorded, Stale, or what follows (a DispatchOrder, for
-- the agent to publish and then settle; Finished).
local c = job_context()
local member = c.id .. '|' .. A.step
redis.call('SREM', KEYS[7], member)  -- accepted or stale, this agent is done with it
local s = redis.call('HMGET', KEYS[2], 'status', 'lease', 'attempt')
if s[1] == false then return reply({kind = 'stale', status = 'missing', lease = 0}) end
local move = A.error and 'fail' or 'succeed'
if s[2] ~= tostring(A.lease) or not may(move, s[1]) then
  history(c.hist, c.now, c.by, 'stale_result_rejected', A.step, nil, A.lease, s[1],
    STEP_TO[move], 'current lease ' .. s[2])
  return reply({kind = 'stale', status = s[1], lease = tonumber(s[2])})
end
move_step(KEYS[2], move, s[1], 'finished_at', c.now)
if A.result then redis.call('HSET', KEYS[2], 'result', A.result) end
if A.retry_after_ms then redis.call('HSET', KEYS[2], 'retry_after_ms', A.retry_after_ms) end
local detail = nil
if A.error then
  redis.call('HSET', KEYS[2], 'error', A.error)
  local e = cjson.decode(A.error)
  detail = e.type .. ': ' .. e.message
end
history(c.hist, c.now, c.by, move, A.step, tonumber(s[3]), A.lease, s[1], STEP_TO[move],
  detail)
local r = A.advance and not A.error and follow(c, A.step, true)
if r then  -- the job moved on (and follow stamped updated_at)
  if r.kind == 'dispatch' then redis.call('ZADD', c.deadlines, A.announce_at, member) end
  return reply(r)
end
redis.call('HSET', c.job, 'updated_at', c.now)
redis.call('ZADD', c.deadlines, A.announce_at, member)
return reply({kind = 'recorded'})
