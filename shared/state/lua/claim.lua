-- An agent claims the attempt it was sent: DISPATCHED -> RUNNING, its lease runs from now.
-- The agent's resolved max attempts (the step's own, else its task's default) is recorded.
-- KEYS[1] job  KEYS[2] step  KEYS[3] history  KEYS[4] deadlines  KEYS[5] the agent's steps
-- ARGV[1] deadline member  [2] lease  [3] agent  [4] now  [5] lease_ms  [6] allowed from (csv)
--     [7] step index  [8] max attempts
-- Returns {"ok"} or {"rejected", step status, current lease}; a rejection is recorded.
local now, lease_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local s = redis.call('HMGET', KEYS[2], 'status', 'lease', 'attempt', 'timeout_ms', 'close_by')
local step = tonumber(ARGV[7])
if s[1] == false then return {'rejected', 'missing', 0} end
local job_status = redis.call('HGET', KEYS[1], 'status')
if s[2] ~= ARGV[2] or not allowed(ARGV[6], s[1]) or allowed(TERMINAL_JOB, job_status) then
  history(KEYS[3], now, ARGV[3], 'claim_rejected', step, tonumber(s[3]), tonumber(ARGV[2]), s[1], nil,
    'current lease ' .. s[2])
  return {'rejected', s[1], tonumber(s[2])}
end
local attempt_deadline = now + tonumber(s[4])
if s[5] then attempt_deadline = math.min(attempt_deadline, tonumber(s[5])) end
local complete_by = math.min(now + lease_ms, attempt_deadline)
redis.call('HSET', KEYS[2], 'status', 'running', 'locked_by', ARGV[3], 'started_at', now,
  'attempt_deadline', attempt_deadline, 'complete_by', complete_by, 'max_attempts', ARGV[8])
redis.call('HSET', KEYS[1], 'updated_at', now)
redis.call('ZADD', KEYS[4], complete_by, ARGV[1])
redis.call('SADD', KEYS[5], ARGV[1])
history(KEYS[3], now, ARGV[3], 'claim', step, tonumber(s[3]), tonumber(s[2]), s[1], 'running', nil)
return {'ok'}
