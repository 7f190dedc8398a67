-- The supervisor takes one overdue deadline. Atomic claim: the deadline must still be due,
-- and taking it moves it, so two supervisors never recover the same step twice.
-- KEYS[1] job  KEYS[2] step  KEYS[3] history  KEYS[4] deadlines
-- ARGV[1] deadline member  [2] now  [3] by  [4] dispatch deadline (ms)  [5] announce deadline (ms)
--     [6] statuses a deadline re-dispatches (csv)  [7] statuses whose outcome awaits announcing
--     [8] step index
-- Returns {"not_due"}  {"gone"}  {"dispatch", <dispatch reply>}  {"announce", attempt, lease}
local member, now, by = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local index = tonumber(ARGV[8])
local score = redis.call('ZSCORE', KEYS[4], member)
if not score or tonumber(score) > now then return {'not_due'} end

local j = redis.call('HMGET', KEYS[1], 'status', 'current')
local s = redis.call('HMGET', KEYS[2], 'status', 'attempt', 'max_attempts', 'lease', 'locked_by')
if j[1] == false or s[1] == false or allowed(TERMINAL_JOB, j[1]) or tonumber(j[2]) ~= index then
  redis.call('ZREM', KEYS[4], member)
  return {'gone'}
end
local status, attempt, max_attempts, lease = s[1], tonumber(s[2]), tonumber(s[3]), tonumber(s[4])

if allowed(ARGV[7], status) then
  redis.call('ZADD', KEYS[4], ARGV[5], member)
  history(KEYS[3], now, by, 'reannounce', index, attempt, lease, status, status,
    'outcome not yet taken up by a scheduler')
  return {'announce', attempt, lease}
end
if not allowed(ARGV[6], status) then
  redis.call('ZREM', KEYS[4], member)
  return {'gone'}
end

local reason
if status == 'waiting_retry' then
  reason = 'retry timer due'
elseif status == 'running' then
  reason = 'lease expired (agent ' .. (s[5] or '?') .. ')'
else
  reason = 'not claimed in time'
end
if status ~= 'waiting_retry' and attempt >= max_attempts then
  local err = cjson.encode({type = 'StepTimeout', retryable = false,
    message = 'attempt ' .. attempt .. ' of ' .. max_attempts .. ': ' .. reason})
  redis.call('HSET', KEYS[2], 'status', 'failed', 'error', err, 'finished_at', now)
  redis.call('HDEL', KEYS[2], 'locked_by')
  redis.call('ZADD', KEYS[4], ARGV[5], member)
  history(KEYS[3], now, by, 'timeout_fail', index, attempt, lease, status, 'failed', reason)
  return {'announce', attempt, lease}
end
local new_lease = dispatch(KEYS[1], KEYS[2], index, attempt + 1, now, ARGV[4], member, KEYS[4])
history(KEYS[3], now, by, 'redispatch', index, attempt + 1, new_lease, status, 'dispatched', reason)
return dispatch_reply('dispatch', KEYS[2], index)
