-- Cancel a job: steps not yet started never start; a running step is asked to stop (its
-- agent learns it when renewing the lease); the scheduler then compensates what succeeded.
-- A job not recorded yet (its submission is still queued) is marked, and is recorded
-- CANCELLED when its submission arrives.
-- KEYS[1] job  KEYS[2] history  KEYS[3] deadlines  KEYS[4] timers  KEYS[5] cancel marker
-- ARGV[1] job_id  [2] now  [3] by  [4] step key prefix  [5] announce deadline (ms)  [6] ttl_s
-- Returns {"finished", status}  {"announce", step, attempt, lease}  or {"requested", phase}
local job_id, now, by, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local j = redis.call('HMGET', KEYS[1], 'status', 'current', 'cancel_requested')
if j[1] == false then
  redis.call('SET', KEYS[5], by, 'EX', ARGV[6])
  return {'requested', 'unknown'}
end
if allowed(TERMINAL_JOB, j[1]) then return {'finished', j[1]} end
if j[3] == '1' then return {'requested', 'already'} end
redis.call('HSET', KEYS[1], 'cancel_requested', 1, 'updated_at', now)
history(KEYS[2], now, by, 'cancel_requested', nil, nil, nil, j[1], j[1], nil)
if j[1] == 'compensating' then return {'requested', 'compensating'} end
local index = tonumber(j[2])
local step, member = prefix .. index, job_id .. '|' .. index
local s = redis.call('HMGET', step, 'status', 'attempt', 'lease')
if s[1] == 'pending' or s[1] == 'dispatched' or s[1] == 'waiting_retry' then
  fail_step(step, now, 'Cancelled', 'the job was cancelled before the step ran')
  redis.call('ZREM', KEYS[4], member)
  redis.call('ZADD', KEYS[3], ARGV[5], member)
  history(KEYS[2], now, by, 'cancel', index, tonumber(s[2]), tonumber(s[3]), s[1], 'failed', nil)
  return {'announce', index, tonumber(s[2]), tonumber(s[3])}
end
return {'requested', s[1]}
