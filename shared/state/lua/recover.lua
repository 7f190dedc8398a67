-- The supervisor takes one overdue deadline. Atomic claim: the deadline must still be due,
-- and taking it moves it, so two supervisors never recover the same step twice.
-- KEYS[1] job  KEYS[2] step  KEYS[3] history  KEYS[4] deadlines
-- ARGV[1] deadline member  [2] now  [3] by  [4] announce deadline (ms)
--     [5] statuses a deadline re-dispatches (csv)  [6] statuses whose outcome awaits announcing
--     [7] step index  [8] step key prefix
-- Returns {"not_due"}  {"gone"}  {"dispatch", <dispatch reply>}  {"announce", attempt, lease}
-- A succeeded step whose job has moved on is one that an agent advanced (record.lua) and
-- that stayed due because the agent did not confirm publishing the next step's dispatch:
-- while that first attempt is unclaimed, it is handed out again (only one delivery of an
-- attempt can claim it), without spending an attempt.
local member, now, by = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local index = tonumber(ARGV[7])
local score = redis.call('ZSCORE', KEYS[4], member)
if not score or tonumber(score) > now then return {'not_due'} end

local j = redis.call('HMGET', KEYS[1], 'status', 'current', 'cancel_requested')
local s = redis.call('HMGET', KEYS[2], 'status', 'attempt', 'max_attempts', 'lease', 'locked_by',
  'attempt_deadline', 'close_by')
if j[1] == false or s[1] == false or allowed(TERMINAL_JOB, j[1]) or tonumber(j[2]) ~= index then
  redis.call('ZREM', KEYS[4], member)
  if j[1] and s[1] == 'succeeded' and not allowed(TERMINAL_JOB, j[1])
    and tonumber(j[2]) == index + 1 then
    local key = ARGV[8] .. (index + 1)
    local lease = unclaimed_first_attempt(key)
    if lease then
      -- Due again later, as every recovery: if this publish is lost too, another round
      -- repairs it; once the step is claimed, the next round finds it gone.
      redis.call('ZADD', KEYS[4], ARGV[4], member)
      history(KEYS[3], now, by, 'republish', index + 1, 1, lease, 'dispatched',
        'dispatched', 'the agent that advanced the job did not confirm publishing it')
      return dispatch_reply('dispatch', key, index + 1)
    end
  end
  return {'gone'}
end
local status, attempt, max_attempts, lease = s[1], tonumber(s[2]), tonumber(s[3]), tonumber(s[4])

if allowed(ARGV[6], status) then
  redis.call('ZADD', KEYS[4], ARGV[4], member)
  history(KEYS[3], now, by, 'reannounce', index, attempt, lease, status, status,
    'outcome not yet taken up by a scheduler')
  return {'announce', attempt, lease}
end
if not allowed(ARGV[5], status) then
  redis.call('ZREM', KEYS[4], member)
  return {'gone'}
end

-- Why the deadline passed decides the error: the step's overall time limit, one attempt's
-- limit, a lease that was not renewed (agent dead or hung), or no agent took the dispatch.
local err_type, reason
if s[7] and now >= tonumber(s[7]) then
  err_type, reason = 'ScheduleToCloseTimeout', 'schedule-to-close timeout'
elseif status == 'running' and s[6] and now >= tonumber(s[6]) then
  err_type, reason = 'StartToCloseTimeout', 'start-to-close timeout'
elseif status == 'running' then
  err_type, reason = 'LeaseExpired', 'lease expired (agent ' .. (s[5] or '?') .. ')'
else
  err_type, reason = 'ScheduleToStartTimeout', 'not claimed in time'
end
-- A cancelled job's forward step is not tried again: it fails, and the scheduler
-- compensates.
if j[3] == '1' and j[1] ~= 'compensating' then
  fail_step(KEYS[2], now, 'Cancelled', 'the job was cancelled; ' .. reason)
  redis.call('ZADD', KEYS[4], ARGV[4], member)
  history(KEYS[3], now, by, 'cancel', index, attempt, lease, status, 'failed', reason)
  return {'announce', attempt, lease}
end
if attempt >= max_attempts or err_type == 'ScheduleToCloseTimeout' then
  fail_step(KEYS[2], now, err_type,
    'attempt ' .. attempt .. ' of ' .. max_attempts .. ': ' .. reason)
  redis.call('ZADD', KEYS[4], ARGV[4], member)
  history(KEYS[3], now, by, 'timeout_fail', index, attempt, lease, status, 'failed', reason)
  return {'announce', attempt, lease}
end
local new_lease = dispatch(KEYS[1], KEYS[2], attempt + 1, now, member, KEYS[4])
history(KEYS[3], now, by, 'redispatch', index, attempt + 1, new_lease, status, 'dispatched', reason)
return dispatch_reply('dispatch', KEYS[2], index)
