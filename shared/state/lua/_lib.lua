-- Shared helpers, after the generated prelude and before each script (Redis scripts
-- cannot include). Every script takes one named input record, A (JSON in ARGV[1]), and
-- returns one named record, JSON (decoded by records.py into typed Structs).
local A = cjson.decode(ARGV[1])
local function reply(t) return cjson.encode(t) end

-- Append one transition to a job's history: who did what, when, with which attempt/lease.
local function history(key, now, by, event, step, attempt, lease, from, to, detail)
  redis.call('RPUSH', key, cjson.encode({
    ts = tonumber(now), by = by, event = event, step = step,
    attempt = attempt, lease = lease, from = from, to = to, detail = detail,
  }))
end

local function ms(seconds) return math.floor(1000 * tonumber(seconds or 0)) end

-- May a step in `status` make `move`? (The table is the state machine's.)
local function may(move, status) return STEP_FROM[move .. '|' .. tostring(status)] == true end

-- A step move the table does not allow is a bug: raise (callers check `may` first, to
-- answer a stale call).
local function must_be_legal(move, from)
  if not may(move, from) then
    error('step move ' .. move .. ' from ' .. tostring(from) .. ' is not in the state machine')
  end
end

-- Move a step from status `from`; more fields may be set with it.
local function move_step(key, move, from, ...)
  must_be_legal(move, from)
  redis.call('HSET', key, 'status', STEP_TO[move], ...)
end

-- Move a job from status `from`; a move the table does not allow is a bug, and raises.
local function move_job(c, move, from, ...)
  if not JOB_FROM[move .. '|' .. tostring(from)] then
    error('job move ' .. move .. ' from ' .. tostring(from) .. ' is not in the state machine')
  end
  local to = JOB_TO[move]
  redis.call('HSET', c.job, 'status', to, 'updated_at', c.now, ...)
  return to
end

-- The context of one job that a script acts on: its keys, who acts, and when. Every job
-- script has the same keys: KEYS[1] job  [2] step  [3] history  [4] deadlines  [5] timers
-- [6] escalations  [7] the script's own (if any). A.step_prefix names the job's steps.
local function job_context()
  return {id = A.job_id, now = A.now, by = A.by, prefix = A.step_prefix, ttl = A.ttl_s,
    rand = A.rand or 0.5, job = KEYS[1], hist = KEYS[3], deadlines = KEYS[4],
    timers = KEYS[5], escalations = KEYS[6]}
end

-- The StepDispatch message of a step's current attempt, written from its record: each
-- field of the message has the name of the record's field it comes from.
local function dispatch_order(c, key, index, again)
  local v = redis.call('HMGET', key, unpack(DISPATCH_READ))
  local f = {}
  for i, name in ipairs(DISPATCH_READ) do f[name] = v[i] end
  f.job_id, f.step, f.idempotency_key = c.id, index, c.id .. ':' .. index
  local parts = {'"kind":"dispatch"'}
  for _, name in ipairs(DISPATCH_FIELDS) do
    local value = f[name]
    if value and value ~= '' then
      if DISPATCH_STRINGS[name] then value = cjson.encode(value) end
      parts[#parts + 1] = '"' .. name .. '":' .. value
    end
  end
  return {kind = 'dispatch', job_id = c.id, step = index, task = f.task,
    attempt = tonumber(f.attempt), lease = tonumber(f.lease), pool = f.pool,
    priority = f.priority or '', compensates = tonumber(f.compensates or ''),
    traceparent = redis.call('HGET', c.job, 'traceparent') or '', again = again or false,
    message = '{' .. table.concat(parts, ',') .. '}'}
end

-- Hand out attempt `attempt` of a step by `move` (dispatch, retry, release): a new lease
-- token (it only grows within the job), and a deadline for the supervisor:
-- schedule-to-start, never past schedule-to-close.
local function dispatch(c, key, index, attempt, move, detail)
  local f = redis.call('HMGET', key, 'status', 'schedule_to_start_s', 'schedule_to_close_s',
    'close_by')
  must_be_legal(move, f[1])  -- before any write: a script's writes stay on error
  local lease = redis.call('HINCRBY', c.job, 'lease_seq', 1)
  local deadline = c.now + ms(f[2])
  local close_by = tonumber(f[4] or '')
  if not close_by and ms(f[3]) > 0 then
    close_by = c.now + ms(f[3])
    redis.call('HSET', key, 'close_by', close_by)
  end
  if close_by then deadline = math.min(deadline, close_by) end
  move_step(key, move, f[1], 'attempt', attempt, 'lease', lease, 'dispatched_at', c.now,
    'complete_by', deadline)
  redis.call('HDEL', key, 'locked_by', 'started_at', 'attempt_deadline', 'finished_at',
    'retry_after_ms', 'error', 'progress')
  redis.call('ZADD', c.deadlines, deadline, c.id .. '|' .. index)
  history(c.hist, c.now, c.by, move, index, attempt, lease, f[1], STEP_TO[move], detail)
  local order = dispatch_order(c, key, index)
  -- What the claim compares the delivered message with: an agent runs only what was
  -- recorded (a message written from the record is the same bytes every time).
  redis.call('HSET', key, 'dispatch_digest', redis.sha1hex(order.message))
  return order
end

-- The lease of a step's first attempt while no agent has claimed it, else nil: only then
-- may a dispatch whose publish was perhaps lost be handed out again (one delivery claims).
local function unclaimed_first_attempt(key)
  local n = redis.call('HMGET', key, 'status', 'attempt', 'lease')
  if n[1] == STEP.DISPATCHED and n[2] == '1' then return tonumber(n[3]) end
  return nil
end

-- Fail a step by `move` (timeout_fail, cancel) with a failure of the fleet's vocabulary.
local function fail_step(c, key, index, move, failure, message)
  local s = redis.call('HMGET', key, 'status', 'attempt', 'lease')
  move_step(key, move, s[1], 'finished_at', c.now, 'error',
    cjson.encode({type = failure, message = message, retryable = not FINAL_FAILURES[failure]}))
  redis.call('HDEL', key, 'locked_by')
  history(c.hist, c.now, c.by, move, index, tonumber(s[2]), tonumber(s[3]), s[1],
    STEP_TO[move], failure .. ': ' .. message)
end

-- Expire every key of a finished job (forward steps 0..n-1 and compensations n..2n-1).
local function expire_job(c, nsteps, ttl)
  redis.call('EXPIRE', c.job, ttl)
  redis.call('EXPIRE', c.hist, ttl)
  for i = 0, 2 * nsteps - 1 do redis.call('EXPIRE', c.prefix .. i, ttl) end
end

-- Tell a submitter listening on Redis channel `channel` (the Python client does) that the
-- job ended: a job_finished message, as a reply queue would get it. Pub/sub is a hint with
-- no delivery guarantee; the client falls back to reading the job.
local function notify_end(channel, job_id, status, result, err)
  if not channel or channel == '' then return end
  redis.call('PUBLISH', channel, '{"kind":"job_finished","job_id":' .. cjson.encode(job_id)
    .. ',"status":"' .. status .. '","result":' .. ((result and result ~= '') and result or 'null')
    .. ',"error":' .. ((err and err ~= '') and err or 'null') .. '}')
end

-- The wait before the attempt after `attempt` of a failed step, or nil when it gets none:
-- the step's resolved retry policy decides (statemachine/retry.py documents it); a
-- handler's own request (retry_after_ms) replaces the backoff. `rand` in [0, 1) spreads it.
local function retry_delay(s, attempt, rand)
  local p = cjson.decode(s.policy)
  local e = cjson.decode(s.error)
  if attempt >= p.max_attempts or e.retryable == false or FINAL_FAILURES[e.type] then
    return nil
  end
  for _, t in ipairs(p.non_retryable or {}) do
    if t == e.type then return nil end
  end
  if s.retry_after_ms then return tonumber(s.retry_after_ms) end
  local delay = math.min(p.initial_ms * p.coefficient ^ (attempt - 1), p.max_ms)
  if p.jitter and p.jitter > 0 then delay = delay * (1 + p.jitter * (2 * rand - 1)) end
  return math.max(0, math.floor(delay))
end

-- What follows the recorded outcome of step `index`: the job's next step, its end, a retry
-- timer, or the compensation of the steps that succeeded (in reverse order). The one
-- implementation of it: every script that records an outcome, or takes one up, calls it.
-- `c.ttl` is how long an ended job's keys stay; `c.rand` spreads a retry's backoff.
-- Returns a dispatch order, {kind='retry_later', due}, {kind='finished', ...} or
-- {kind='stale', why}; `ended`/`again` say whether this call made the change it reports.
-- With `forward_only`, nil unless step `index` is the current step of a running job that
-- is not being cancelled (an agent's record follows only that).
local function follow(c, index, forward_only)
  local member = c.id .. '|' .. index
  local j = redis.call('HMGET', c.job, 'status', 'current', 'nsteps', 'reply_to',
    'correlation_id', 'result', 'error', 'cancel_requested', 'comp_list', 'comp_pos',
    'comp_cause', 'notify')
  if forward_only and (j[1] ~= JOB.RUNNING or j[8] == '1' or tonumber(j[2]) ~= index) then
    return nil
  end
  if j[1] == false then return {kind = 'stale', why = 'no such job'} end
  if JOB_TERMINAL[j[1]] then
    return {kind = 'finished', status = j[1], reply_to = j[4], correlation_id = j[5],
      result = j[6] or '', error = j[7] or '', ended = false}
  end
  local nsteps, cancelled, status = tonumber(j[3]), j[8] == '1', j[1]
  local key = c.prefix .. index
  local sf = redis.call('HMGET', key, 'status', 'attempt', 'result', 'error', 'policy',
    'retry_after_ms', 'close_by', 'lease')
  local s = {status = sf[1], attempt = tonumber(sf[2]), result = sf[3], error = sf[4],
    policy = sf[5], retry_after_ms = sf[6], close_by = tonumber(sf[7] or ''),
    lease = tonumber(sf[8])}
  if tonumber(j[2]) ~= index then
    -- Already advanced. If the current step's first dispatch may not have been published
    -- (its publisher died, or the broker failed before the confirm), hand it out again:
    -- only one delivery of an attempt can claim it.
    local current = c.prefix .. j[2]
    if s.status == STEP.SUCCEEDED and unclaimed_first_attempt(current) then
      return dispatch_order(c, current, tonumber(j[2]), true)
    end
    return {kind = 'stale', why = 'already advanced'}
  end

  local function finish(move, result, err)
    local to = move_job(c, move, status, 'finished_at', c.now)
    if result then redis.call('HSET', c.job, 'result', result) end
    if err then redis.call('HSET', c.job, 'error', err) end
    err = err or j[7] or nil
    redis.call('ZREM', c.deadlines, member)
    history(c.hist, c.now, c.by, move, nil, nil, nil, status, to, nil)
    if to == JOB.ESCALATED then redis.call('ZADD', c.escalations, c.now, c.id) end
    expire_job(c, nsteps, c.ttl)
    notify_end(j[12], c.id, to, result, err)
    return {kind = 'finished', status = to, reply_to = j[4], correlation_id = j[5],
      result = result or '', error = err or '', ended = true}
  end

  -- The record of the compensation of forward step `of` (its own step, nsteps + of): the
  -- options of the step it undoes, but for those that belong to that step alone. Read
  -- before the caller writes anything: a script's writes stay if it fails half-way.
  local function compensation_of(of)
    local OWN = {task = true, compensation = true, max_attempts = true,
      schedule_to_close_s = true, heartbeat_timeout_s = true}
    local names = {'compensation', 'policy'}
    for _, name in ipairs(STEP_OPTIONS) do
      if not OWN[name] then names[#names + 1] = name end
    end
    local values = redis.call('HMGET', c.prefix .. of, unpack(names))
    local fields = {'index', nsteps + of, 'status', STEP.PENDING, 'attempt', 0, 'lease', 0,
      'compensates', of, 'task', values[1]}
    for i = 2, #names do
      if values[i] then fields[#fields + 1], fields[#fields + 2] = names[i], values[i] end
    end
    return {of = of, task = values[1], fields = fields}
  end

  -- Start a compensation read by compensation_of.
  local function compensate(comp)
    local ci = nsteps + comp.of
    redis.call('HSET', c.prefix .. ci, unpack(comp.fields))
    redis.call('HSET', c.job, 'current', ci, 'updated_at', c.now)
    return dispatch(c, c.prefix .. ci, ci, 1, 'dispatch',
      'undoes step ' .. comp.of .. ' with ' .. comp.task)
  end

  -- A forward step failed for good (or the job was cancelled): undo the steps before `upto`.
  local function start_compensation(upto, err)
    local list = {}
    for i = upto - 1, 0, -1 do
      local f = redis.call('HMGET', c.prefix .. i, 'status', 'compensation')
      if f[1] == STEP.SUCCEEDED and f[2] and f[2] ~= '' then list[#list + 1] = i end
    end
    local first = list[1] and compensation_of(list[1])
    redis.call('ZREM', c.deadlines, member)
    local cause = (cancelled and not err) and 'cancel' or 'failure'
    if err then redis.call('HSET', c.job, 'error', err) end
    if #list == 0 then return finish(cause == 'cancel' and 'cancelled' or 'failed', nil, err) end
    move_job(c, 'compensating', status, 'comp_list', table.concat(list, ','), 'comp_pos', 1,
      'comp_cause', cause)
    history(c.hist, c.now, c.by, 'compensating', nil, nil, nil, status, JOB.COMPENSATING,
      'undoing steps ' .. table.concat(list, ', '))
    status = JOB.COMPENSATING
    return compensate(first)
  end

  local compensating = status == JOB.COMPENSATING
  if s.status == STEP.SUCCEEDED then
    if compensating then
      local list = {}
      for i in string.gmatch(j[9], '[^,]+') do list[#list + 1] = tonumber(i) end
      local pos = tonumber(j[10]) + 1
      local next_one = list[pos] and compensation_of(list[pos])
      redis.call('ZREM', c.deadlines, member)
      if not next_one then
        return finish(j[11] == 'cancel' and 'cancelled' or 'compensated', nil, nil)
      end
      redis.call('HSET', c.job, 'comp_pos', pos)
      return compensate(next_one)
    end
    if cancelled then return start_compensation(index + 1, nil) end
    if index + 1 < nsteps then
      redis.call('ZREM', c.deadlines, member)
      redis.call('HSET', c.job, 'current', index + 1, 'updated_at', c.now)
      return dispatch(c, c.prefix .. (index + 1), index + 1, 1, 'dispatch')
    end
    return finish('succeed', s.result, nil)
  elseif s.status == STEP.FAILED then
    local delay = nil
    if not (cancelled and not compensating) then delay = retry_delay(s, s.attempt, c.rand) end
    local due = delay and c.now + delay
    if due and s.close_by and due >= s.close_by then
      -- The next attempt would start past the step's schedule-to-close deadline.
      local last = cjson.decode(s.error)
      local message = 'no time left for attempt ' .. (s.attempt + 1) .. ' (last error: '
        .. last.type .. ': ' .. last.message .. ')'
      s.error = cjson.encode({type = FAILURE.SCHEDULE_TO_CLOSE_TIMEOUT, message = message,
        retryable = false})
      redis.call('HSET', key, 'error', s.error)
      history(c.hist, c.now, c.by, 'timeout_fail', index, s.attempt, s.lease, STEP.FAILED,
        STEP.FAILED, FAILURE.SCHEDULE_TO_CLOSE_TIMEOUT .. ': ' .. message)
      due = nil
    end
    if due then
      move_step(key, 'retry_later', s.status, 'complete_by', due)
      redis.call('ZREM', c.deadlines, member)
      redis.call('ZADD', c.timers, due, member)
      history(c.hist, c.now, c.by, 'retry_later', index, s.attempt, s.lease, STEP.FAILED,
        STEP.WAITING_RETRY, 'retry in ' .. delay .. ' ms')
      return {kind = 'retry_later', due = due}
    end
    if compensating then return finish('escalated', nil, s.error) end
    return start_compensation(index, (not cancelled) and s.error or nil)
  end
  return {kind = 'stale', why = 'step is ' .. tostring(s.status)}
end
