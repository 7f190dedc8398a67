-- Create a job and dispatch its first step in one atomic step (or, for a delayed job,
-- set its start timer), or report the existing job.
-- KEYS[1] job  KEYS[2] history  KEYS[3] jobs index  KEYS[4] deadlines  KEYS[5] timers
-- KEYS[6] step 0  KEYS[7] cancel marker (set when the job was cancelled before it arrived)
-- ARGV[1] job_id  [2] now  [3] by  [4] step key prefix  [5] idempotency key  [6] reply_to
--     [7] correlation_id  [8] traceparent  [9] start at (ms; <= now: at once)
--     [10] ttl_s (for a job that ends at once)  [11] step count n  [12] notify channel;
--     then one JSON object of step fields per step
-- Returns {"created", <dispatch reply>}  {"scheduled", start_at}  {"cancelled"}
--      or {"exists", job status, current step, step status, <dispatch reply or {}>}
local job, hist = KEYS[1], KEYS[2]
local job_id, now, by, step_prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]

if redis.call('EXISTS', job) == 1 then
  local j = redis.call('HMGET', job, 'status', 'current')
  local step = step_prefix .. j[2]
  local step_status = redis.call('HGET', step, 'status')
  if not step_status or step_status == 'pending' then  -- rejected, or not started yet
    return {'exists', j[1], tonumber(j[2]), step_status or '', {}}
  end
  local d = dispatch_reply('exists', step, tonumber(j[2]))
  return {'exists', j[1], tonumber(j[2]), redis.call('HGET', step, 'status'), d}
end

local n, start_at = tonumber(ARGV[11]), tonumber(ARGV[9])
redis.call('HSET', job, 'id', job_id, 'status', 'pending', 'created_at', now, 'updated_at', now,
  'nsteps', n, 'current', 0, 'submitted_by', by, 'idempotency_key', ARGV[5],
  'reply_to', ARGV[6], 'correlation_id', ARGV[7], 'traceparent', ARGV[8], 'lease_seq', 0,
  'notify', ARGV[12])
for i = 0, n - 1 do
  local key = step_prefix .. i
  redis.call('HSET', key, 'index', i, 'status', 'pending', 'attempt', 0, 'lease', 0)
  for field, value in pairs(cjson.decode(ARGV[13 + i])) do
    redis.call('HSET', key, field, value)
  end
end
redis.call('ZADD', KEYS[3], now, job_id)
-- The index lists jobs whose records may still exist; older entries only point at expired keys.
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 1000 * tonumber(ARGV[10]))
history(hist, now, by, 'submit', nil, nil, nil, nil, 'pending', nil)
local cancelled_by = redis.call('GET', KEYS[7])
if cancelled_by then
  redis.call('HSET', job, 'status', 'cancelled', 'cancel_requested', 1, 'finished_at', now)
  history(hist, now, cancelled_by, 'cancelled', nil, nil, nil, 'pending', 'cancelled',
    'cancelled before it was recorded')
  redis.call('DEL', KEYS[7])
  expire_job(job, hist, step_prefix, n, ARGV[10])
  notify_end(ARGV[12], job_id, 'cancelled', nil, nil)
  return {'cancelled'}
end
if start_at > now then
  redis.call('HSET', job, 'start_at', start_at)
  redis.call('ZADD', KEYS[5], start_at, job_id .. '|0')
  history(hist, now, by, 'delay', 0, nil, nil, 'pending', 'pending',
    'starts in ' .. (start_at - now) .. ' ms')
  return {'scheduled', start_at}
end
redis.call('HSET', job, 'status', 'running')
history(hist, now, by, 'start', nil, nil, nil, 'pending', 'running', nil)
local lease = dispatch(job, KEYS[6], 1, now, job_id .. '|0', KEYS[4])
history(hist, now, by, 'dispatch', 0, 1, lease, 'pending', 'dispatched', nil)
return dispatch_reply('created', KEYS[6], 0)
