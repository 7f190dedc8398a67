-- Create a job and dispatch its first step in one atomic step (or, for a delayed job,
-- set its start timer), or report the existing job.
-- KEYS: the job script's six (_lib.lua), then [7] jobs index  [8] cancel marker (set when
-- the job was cancelled before it arrived)
-- A: CreateJob (records.py). Returns Created, Scheduled, Exists, or Finished (cancelled).
local c = job_context()
if redis.call('EXISTS', c.job) == 1 then
  local j = redis.call('HMGET', c.job, 'status', 'current')
  local key = c.prefix .. j[2]
  local step_status = redis.call('HGET', key, 'status')
  local order = nil
  if step_status and step_status ~= STEP.PENDING then  -- else rejected, or not started yet
    order = dispatch_order(c, key, tonumber(j[2]), true)
  end
  return reply({kind = 'exists', job_status = j[1], step_status = step_status or '',
    order = order})
end

local n = #A.steps
redis.call('HSET', c.job, 'id', c.id, 'status', JOB.PENDING, 'created_at', c.now,
  'updated_at', c.now, 'nsteps', n, 'current', 0, 'submitted_by', c.by,
  'idempotency_key', A.idempotency_key, 'reply_to', A.reply_to,
  'correlation_id', A.correlation_id, 'traceparent', A.traceparent, 'lease_seq', 0,
  'notify', A.notify)
for i, fields in ipairs(A.steps) do
  local record = {'index', i - 1, 'status', STEP.PENDING, 'attempt', 0, 'lease', 0}
  for field, value in pairs(fields) do record[#record + 1], record[#record + 2] = field, value end
  redis.call('HSET', c.prefix .. (i - 1), unpack(record))
end
redis.call('ZADD', KEYS[7], c.now, c.id)
-- The index lists jobs whose records may still exist; older entries only point at expired keys.
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', c.now - 1000 * c.ttl)
history(c.hist, c.now, c.by, 'submit', nil, nil, nil, nil, JOB.PENDING, nil)
local cancelled_by = redis.call('GET', KEYS[8])
if cancelled_by then
  local to = move_job(c, 'cancelled', JOB.PENDING, 'cancel_requested', 1, 'finished_at', c.now)
  history(c.hist, c.now, cancelled_by, 'cancelled', nil, nil, nil, JOB.PENDING, to,
    'cancelled before it was recorded')
  redis.call('DEL', KEYS[8])
  expire_job(c, n, c.ttl)
  notify_end(A.notify, c.id, to, nil, nil)
  return reply({kind = 'finished', status = to, reply_to = A.reply_to,
    correlation_id = A.correlation_id, ended = true})
end
if A.start_at > c.now then
  redis.call('HSET', c.job, 'start_at', A.start_at)
  redis.call('ZADD', c.timers, A.start_at, c.id .. '|0')
  history(c.hist, c.now, c.by, 'delay', 0, nil, nil, STEP.PENDING, STEP.PENDING,
    'starts in ' .. (A.start_at - c.now) .. ' ms')
  return reply({kind = 'scheduled', start_at = A.start_at})
end
local to = move_job(c, 'start', JOB.PENDING)
history(c.hist, c.now, c.by, 'start', nil, nil, nil, JOB.PENDING, to, nil)
return reply({kind = 'created', order = dispatch(c, KEYS[2], 0, 1, 'dispatch')})
