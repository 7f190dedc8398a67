-- The scheduler advances a job after a step's outcome was recorded: next step, retry timer,
-- or the job's end. Duplicate and late announcements change nothing.
-- KEYS[1] job  KEYS[2] step  KEYS[3] next step (or the same key on the last step)
-- KEYS[4] history  KEYS[5] deadlines
-- ARGV[1] job_id  [2] step index  [3] lease  [4] by  [5] now  [6] retry delay (ms)
--     [7] dispatch deadline (ms)  [8] ttl_s  [9] step key prefix
-- Returns {"dispatch", <dispatch reply>}  {"retry_later", due_ms}
--      or {"finished", status, reply_to, correlation_id, result, error}  or {"stale", why}
local job, step, hist, deadlines = KEYS[1], KEYS[2], KEYS[4], KEYS[5]
local job_id, index, by, now = ARGV[1], tonumber(ARGV[2]), ARGV[4], tonumber(ARGV[5])
local member = job_id .. '|' .. index

local j = redis.call('HMGET', job, 'status', 'current', 'nsteps', 'reply_to', 'correlation_id',
  'result', 'error')
if j[1] == false then return {'stale', 'no such job'} end
if allowed(TERMINAL_JOB, j[1]) then
  return {'finished', j[1], j[4], j[5], j[6] or '', j[7] or ''}
end
local s = redis.call('HMGET', step, 'status', 'lease', 'attempt', 'max_attempts', 'result', 'error')
if s[2] ~= ARGV[3] then return {'stale', 'superseded'} end
if tonumber(j[2]) ~= index then
  -- Already advanced. If the next step's first dispatch may not have been published (the
  -- scheduler died or the broker failed before the confirm), hand it out again: only one
  -- delivery of an attempt can claim it.
  if tonumber(j[2]) == index + 1 and s[1] == 'succeeded' then
    local n = redis.call('HMGET', KEYS[3], 'status', 'attempt')
    if n[1] == 'dispatched' and n[2] == '1' then return dispatch_reply('dispatch', KEYS[3], index + 1) end
  end
  return {'stale', 'already advanced'}
end

local function finish(status, result, err)
  redis.call('HSET', job, 'status', status, 'updated_at', now, 'finished_at', now)
  if result then redis.call('HSET', job, 'result', result) end
  if err then redis.call('HSET', job, 'error', err) end
  redis.call('ZREM', deadlines, member)
  history(hist, now, by, status == 'succeeded' and 'succeed' or 'fail', nil, nil, nil, 'running',
    status, nil)
  expire_job(job, hist, ARGV[9], tonumber(j[3]), ARGV[8])
  return {'finished', status, j[4], j[5], result or '', err or ''}
end

if s[1] == 'succeeded' then
  if index + 1 < tonumber(j[3]) then
    redis.call('ZREM', deadlines, member)
    redis.call('HSET', job, 'current', index + 1, 'updated_at', now)
    local lease = dispatch(job, KEYS[3], index + 1, 1, now, ARGV[7], job_id .. '|' .. (index + 1),
      deadlines)
    history(hist, now, by, 'dispatch', index + 1, 1, lease, 'pending', 'dispatched', nil)
    return dispatch_reply('dispatch', KEYS[3], index + 1)
  end
  return finish('succeeded', s[5], nil)
elseif s[1] == 'failed' then
  local attempt, max_attempts = tonumber(s[3]), tonumber(s[4])
  local retryable = cjson.decode(s[6]).retryable ~= false
  if retryable and attempt < max_attempts then
    local due = now + tonumber(ARGV[6])
    redis.call('HSET', step, 'status', 'waiting_retry', 'complete_by', due)
    redis.call('ZADD', deadlines, due, member)
    history(hist, now, by, 'retry_later', index, attempt, tonumber(s[2]), 'failed', 'waiting_retry',
      'retry in ' .. ARGV[6] .. ' ms')
    return {'retry_later', due}
  end
  return finish('failed', nil, s[6])
end
return {'stale', 'step is ' .. s[1]}
