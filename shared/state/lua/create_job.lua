-- Create a job and dispatch its first step in one atomic step, or report the existing job.
-- KEYS[1] job  KEYS[2] history  KEYS[3] jobs index  KEYS[4] deadlines  KEYS[5] step 0
-- ARGV[1] job_id  [2] now  [3] by  [4] step key prefix  [5] dispatch deadline (ms)
--     [6] idempotency key  [7] reply_to  [8] correlation_id  [9] traceparent
--     [10] step count n; then 5 values per step: task, pool, payload (JSON), max_attempts, timeout_ms
-- Returns {"created", lease, attempt, task, pool, payload, timeout_ms, 0}
--      or {"exists", job status, current step, step status, <dispatch reply of current step>...}
local job, hist = KEYS[1], KEYS[2]
local job_id, now, by, step_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

if redis.call('EXISTS', job) == 1 then
  local j = redis.call('HMGET', job, 'status', 'current')
  local step = step_prefix .. j[2]
  if redis.call('EXISTS', step) == 0 then  -- a rejected submission has no steps
    return {'exists', j[1], tonumber(j[2]), '', {}}
  end
  local d = dispatch_reply('exists', step, tonumber(j[2]))
  return {'exists', j[1], tonumber(j[2]), redis.call('HGET', step, 'status'), d}
end

local n = tonumber(ARGV[10])
redis.call('HSET', job, 'id', job_id, 'status', 'running', 'created_at', now, 'updated_at', now,
  'nsteps', n, 'current', 0, 'submitted_by', by, 'idempotency_key', ARGV[6],
  'reply_to', ARGV[7], 'correlation_id', ARGV[8], 'traceparent', ARGV[9], 'lease_seq', 0)
for i = 0, n - 1 do
  local base = 10 + i * 5
  redis.call('HSET', step_prefix .. i, 'index', i, 'status', 'pending', 'attempt', 0, 'lease', 0,
    'task', ARGV[base + 1], 'pool', ARGV[base + 2], 'payload', ARGV[base + 3],
    'max_attempts', ARGV[base + 4], 'timeout_ms', ARGV[base + 5])
end
redis.call('ZADD', KEYS[3], now, job_id)
history(hist, now, by, 'submit', nil, nil, nil, nil, 'pending', nil)
history(hist, now, by, 'start', nil, nil, nil, 'pending', 'running', nil)
local lease = dispatch(job, KEYS[5], 0, 1, now, ARGV[5], job_id .. '|0', KEYS[4])
history(hist, now, by, 'dispatch', 0, 1, lease, 'pending', 'dispatched', nil)
return dispatch_reply('created', KEYS[5], 0)
