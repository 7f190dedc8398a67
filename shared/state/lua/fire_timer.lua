-- The scheduler fires one due timer: a retry whose backoff ran out, or a delayed job's
-- start. Atomic claim (the timer must still be due and is removed), so two schedulers
-- never fire the same timer. A retry due past the step's schedule-to-close deadline fails
-- the step instead, and that failure is followed (_lib's follow).
-- KEYS: the job script's six. A: FireTimer (records.py). Returns Gone or Fired.
local c = job_context()
local index = A.step
local member = c.id .. '|' .. index
local score = redis.call('ZSCORE', c.timers, member)
if not score or tonumber(score) > c.now then return reply({kind = 'gone'}) end
redis.call('ZREM', c.timers, member)
local j = redis.call('HMGET', c.job, 'status', 'current')
local s = redis.call('HMGET', KEYS[2], 'status', 'attempt', 'close_by')
if j[1] == false or s[1] == false or JOB_TERMINAL[j[1]] or tonumber(j[2]) ~= index then
  return reply({kind = 'gone'})
end
local attempt = tonumber(s[2])
if s[1] == STEP.WAITING_RETRY then
  if s[3] and c.now >= tonumber(s[3]) then
    fail_step(c, KEYS[2], index, 'timeout_fail', FAILURE.SCHEDULE_TO_CLOSE_TIMEOUT,
      'the step ran out of time before attempt ' .. (attempt + 1))
    return reply({kind = 'fired', failure = FAILURE.SCHEDULE_TO_CLOSE_TIMEOUT,
      next = follow(c, index)})
  end
  return reply({kind = 'fired',
    next = dispatch(c, KEYS[2], index, attempt + 1, 'retry', 'retry timer due')})
end
if s[1] == STEP.PENDING and j[1] == JOB.PENDING then
  local to = move_job(c, 'start', JOB.PENDING)
  history(c.hist, c.now, c.by, 'start', nil, nil, nil, JOB.PENDING, to, 'start time reached')
  return reply({kind = 'fired', next = dispatch(c, KEYS[2], index, 1, 'dispatch')})
end
return reply({kind = 'gone'})
