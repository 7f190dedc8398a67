-- The scheduler fires one due timer: a retry whose backoff ran out, or a delayed job's
-- start. Atomic claim (the timer must still be due and is removed), so two schedulers
-- never fire the same timer.
-- KEYS[1] job  KEYS[2] step  KEYS[3] history  KEYS[4] deadlines  KEYS[5] timers
-- ARGV[1] timer member  [2] now  [3] by  [4] step index  [5] announce deadline (ms)
-- Returns {"dispatch", <dispatch reply>}  {"announce", attempt, lease}  or {"gone"}
local member, now, by, index = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local score = redis.call('ZSCORE', KEYS[5], member)
if not score or tonumber(score) > now then return {'gone'} end
redis.call('ZREM', KEYS[5], member)
local j = redis.call('HMGET', KEYS[1], 'status', 'current')
local s = redis.call('HMGET', KEYS[2], 'status', 'attempt', 'lease', 'close_by')
if j[1] == false or s[1] == false or allowed(TERMINAL_JOB, j[1]) or tonumber(j[2]) ~= index then
  return {'gone'}
end
local attempt, lease = tonumber(s[2]), tonumber(s[3])
if s[1] == 'waiting_retry' then
  if s[4] and now >= tonumber(s[4]) then
    fail_step(KEYS[2], now, 'ScheduleToCloseTimeout', 'the step ran out of time before attempt '
      .. (attempt + 1))
    redis.call('ZADD', KEYS[4], ARGV[5], member)
    history(KEYS[3], now, by, 'timeout_fail', index, attempt, lease, 'waiting_retry', 'failed',
      'schedule-to-close timeout')
    return {'announce', attempt, lease}
  end
  local new_lease = dispatch(KEYS[1], KEYS[2], attempt + 1, now, member, KEYS[4])
  history(KEYS[3], now, by, 'retry', index, attempt + 1, new_lease, 'waiting_retry', 'dispatched',
    'retry timer due')
  return dispatch_reply('dispatch', KEYS[2], index)
end
if s[1] == 'pending' and j[1] == 'pending' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'updated_at', now)
  history(KEYS[3], now, by, 'start', nil, nil, nil, 'pending', 'running', 'start time reached')
  local new_lease = dispatch(KEYS[1], KEYS[2], 1, now, member, KEYS[4])
  history(KEYS[3], now, by, 'dispatch', index, 1, new_lease, 'pending', 'dispatched', nil)
  return dispatch_reply('dispatch', KEYS[2], index)
end
return {'gone'}
