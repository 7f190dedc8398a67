-- The scheduler advances a job after a step's outcome was recorded: the next step, a retry
-- timer, the compensations of the steps that succeeded (in reverse order), or the job's
-- end. Duplicate and late announcements change nothing.
-- KEYS[1] job  KEYS[2] step  KEYS[3] history  KEYS[4] deadlines  KEYS[5] timers
-- KEYS[6] escalations (jobs a supervisor must report)
-- ARGV[1] job_id  [2] step index  [3] lease  [4] by  [5] now  [6] ttl_s  [7] step key prefix
-- Returns {"dispatch", <dispatch reply>}  {"retry_later", due_ms}  {"stale", why}
--      or {"finished", status, reply_to, correlation_id, result, error}
local job, step, hist, deadlines, timers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local job_id, index, by, now = ARGV[1], tonumber(ARGV[2]), ARGV[4], tonumber(ARGV[5])
local prefix = ARGV[7]
local member = job_id .. '|' .. index

local j = redis.call('HMGET', job, 'status', 'current', 'nsteps', 'reply_to', 'correlation_id',
  'result', 'error', 'cancel_requested', 'comp_list', 'comp_pos', 'comp_cause', 'notify')
if j[1] == false then return {'stale', 'no such job'} end
if allowed(TERMINAL_JOB, j[1]) then
  return {'finished', j[1], j[4], j[5], j[6] or '', j[7] or ''}
end
local nsteps, cancelled = tonumber(j[3]), j[8] == '1'
local s = redis.call('HMGET', step, 'status', 'lease', 'attempt', 'max_attempts', 'result', 'error',
  'retry_delay_ms', 'close_by')
if s[2] ~= ARGV[3] then return {'stale', 'superseded'} end
if tonumber(j[2]) ~= index then
  -- Already advanced. If the next step's first dispatch may not have been published (the
  -- scheduler died or the broker failed before the confirm), hand it out again: only one
  -- delivery of an attempt can claim it.
  local next_key = prefix .. j[2]
  if s[1] == 'succeeded' and unclaimed_first_attempt(next_key) then
    return dispatch_reply('dispatch', next_key, tonumber(j[2]))
  end
  return {'stale', 'already advanced'}
end

local function finish(status, result, err)
  redis.call('HSET', job, 'status', status, 'updated_at', now, 'finished_at', now)
  if result then redis.call('HSET', job, 'result', result) end
  if err then redis.call('HSET', job, 'error', err) end
  err = err or redis.call('HGET', job, 'error') or nil
  redis.call('ZREM', deadlines, member)
  history(hist, now, by, status == 'succeeded' and 'succeed' or status, nil, nil, nil, j[1],
    status, nil)
  expire_job(job, hist, prefix, nsteps, ARGV[6])
  notify_end(j[12], job_id, status, result, err)
  return {'finished', status, j[4], j[5], result or '', err or ''}
end

-- Start the compensation of forward step `of` (its own step, index nsteps + of).
local function compensate(of)
  local fwd = redis.call('HMGET', prefix .. of, 'compensation', 'pool', 'payload', 'max_attempts',
    'timeout_ms', 's2s_ms', 'retry', 'priority')
  local key, ci = prefix .. (nsteps + of), nsteps + of
  redis.call('HSET', key, 'index', ci, 'status', 'pending', 'attempt', 0, 'lease', 0,
    'task', fwd[1], 'pool', fwd[2], 'payload', fwd[3], 'max_attempts', fwd[4], 'max_explicit', '',
    'timeout_ms', fwd[5], 's2s_ms', fwd[6], 's2c_ms', 0, 'hb_ms', 0, 'retry', fwd[7] or '',
    'compensates', of, 'priority', fwd[8] or '')
  redis.call('HSET', job, 'current', ci, 'updated_at', now)
  local lease = dispatch(job, key, 1, now, job_id .. '|' .. ci, deadlines)
  history(hist, now, by, 'compensate', ci, 1, lease, 'pending', 'dispatched',
    'undoes step ' .. of .. ' with ' .. fwd[1])
  return dispatch_reply('dispatch', key, ci)
end

-- A forward step finally failed (or the job was cancelled): undo the steps before `upto`.
local function start_compensation(upto, err)
  redis.call('ZREM', deadlines, member)
  local list = {}
  for i = upto - 1, 0, -1 do
    local f = redis.call('HMGET', prefix .. i, 'status', 'compensation')
    if f[1] == 'succeeded' and f[2] and f[2] ~= '' then list[#list + 1] = i end
  end
  local cause = (cancelled and not err) and 'cancel' or 'failure'
  if err then redis.call('HSET', job, 'error', err) end
  if #list == 0 then return finish(cause == 'cancel' and 'cancelled' or 'failed', nil, err) end
  redis.call('HSET', job, 'status', 'compensating', 'comp_list', table.concat(list, ','),
    'comp_pos', 1, 'comp_cause', cause)
  history(hist, now, by, 'compensating', nil, nil, nil, j[1], 'compensating',
    'undoing steps ' .. table.concat(list, ', '))
  j[1] = 'compensating'
  return compensate(list[1])
end

local compensating = j[1] == 'compensating'
if s[1] == 'succeeded' then
  if compensating then
    local list = {}
    for i in string.gmatch(j[9], '[^,]+') do list[#list + 1] = tonumber(i) end
    local pos = tonumber(j[10]) + 1
    redis.call('ZREM', deadlines, member)
    if pos > #list then
      return finish(j[11] == 'cancel' and 'cancelled' or 'compensated', nil, nil)
    end
    redis.call('HSET', job, 'comp_pos', pos)
    return compensate(list[pos])
  end
  if cancelled then return start_compensation(index + 1, nil) end
  if index + 1 < nsteps then
    redis.call('ZREM', deadlines, member)
    redis.call('HSET', job, 'current', index + 1, 'updated_at', now)
    local key = prefix .. (index + 1)
    local lease = dispatch(job, key, 1, now, job_id .. '|' .. (index + 1), deadlines)
    history(hist, now, by, 'dispatch', index + 1, 1, lease, 'pending', 'dispatched', nil)
    return dispatch_reply('dispatch', key, index + 1)
  end
  return finish('succeeded', s[5], nil)
elseif s[1] == 'failed' then
  local attempt, max_attempts = tonumber(s[3]), tonumber(s[4])
  local delay = tonumber(s[7] or '-1')
  local due = now + (delay or -1)
  local close_by = tonumber(s[8] or '')
  local retry = delay and delay >= 0 and attempt < max_attempts
    and not (cancelled and not compensating)
  if retry and close_by and due >= close_by then
    -- The next attempt would start past the step's schedule-to-close deadline.
    local last = cjson.decode(s[6])
    fail_step(step, now, 'ScheduleToCloseTimeout', 'no time left for attempt ' .. (attempt + 1)
      .. ' (last error: ' .. last.type .. ': ' .. last.message .. ')')
    s[6] = redis.call('HGET', step, 'error')
    history(hist, now, by, 'timeout_fail', index, attempt, tonumber(s[2]), 'failed', 'failed',
      'schedule-to-close timeout')
    retry = false
  end
  if retry then
    redis.call('HSET', step, 'status', 'waiting_retry', 'complete_by', due)
    redis.call('ZREM', deadlines, member)
    redis.call('ZADD', timers, due, member)
    history(hist, now, by, 'retry_later', index, attempt, tonumber(s[2]), 'failed', 'waiting_retry',
      'retry in ' .. delay .. ' ms')
    return {'retry_later', due}
  end
  if compensating then
    redis.call('ZADD', KEYS[6], now, job_id)
    return finish('escalated', nil, s[6])
  end
  return start_compensation(index, (not cancelled) and s[6] or nil)
end
return {'stale', 'step is ' .. s[1]}
