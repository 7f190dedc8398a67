-- Cancel a job: steps not yet started never start; a running step is asked to stop (its
-- agent learns it when renewing the lease); the scheduler then compensates what succeeded.
-- A job not recorded yet (its submission is still queued) is marked, and is recorded
-- CANCELLED when its submission arrives.
-- KEYS: the job script's six, then [7] cancel marker
-- A: Cancel (records.py). Returns CancelAnswer: `announce` names the step stopped before
-- it ran, for the caller to announce; else `phase` says what the job is doing.
local c = job_context()
local j = redis.call('HMGET', c.job, 'status', 'current', 'cancel_requested')
if j[1] == false then
  redis.call('SET', KEYS[7], c.by, 'EX', c.ttl)
  return reply({kind = 'cancel', phase = 'unknown'})
end
if JOB_TERMINAL[j[1]] then return reply({kind = 'cancel', phase = j[1]}) end
if j[3] == '1' then return reply({kind = 'cancel', phase = 'already'}) end
redis.call('HSET', c.job, 'cancel_requested', 1, 'updated_at', c.now)
history(c.hist, c.now, c.by, 'cancel_requested', nil, nil, nil, j[1], j[1], nil)
if j[1] == JOB.COMPENSATING then return reply({kind = 'cancel', phase = 'compensating'}) end
local index = tonumber(j[2])
local key, member = c.prefix .. index, c.id .. '|' .. index
local s = redis.call('HMGET', key, 'status', 'attempt', 'lease')
if may('cancel', s[1]) then
  fail_step(c, key, index, 'cancel', FAILURE.CANCELLED,
    'the job was cancelled before the step ran')
  redis.call('ZREM', c.timers, member)
  redis.call('ZADD', c.deadlines, A.announce_at, member)
  return reply({kind = 'cancel', phase = s[1], announce = {step = index,
    attempt = tonumber(s[2]), lease = tonumber(s[3])}})
end
return reply({kind = 'cancel', phase = s[1]})
