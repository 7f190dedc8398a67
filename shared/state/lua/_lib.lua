-- Shared helpers, prepended to every script by store.py (Redis scripts cannot include).

-- Append one transition to a job's history: who did what, when, with which attempt/lease.
local function history(key, now, by, event, step, attempt, lease, from, to, detail)
  redis.call('RPUSH', key, cjson.encode({
    ts = tonumber(now), by = by, event = event, step = step,
    attempt = attempt, lease = lease, from = from, to = to, detail = detail,
  }))
end

-- Is `status` one of the comma-separated allowed statuses passed in from the state machine?
local function allowed(csv, status)
  for s in string.gmatch(csv, '[^,]+') do
    if s == status then return true end
  end
  return false
end

-- Dispatch attempt `attempt` of a step: a new lease token (it only grows within the job),
-- and a deadline for the supervisor: schedule-to-start, never past schedule-to-close.
local function dispatch(job, step, attempt, now, member, deadlines)
  local lease = redis.call('HINCRBY', job, 'lease_seq', 1)
  local f = redis.call('HMGET', step, 's2s_ms', 's2c_ms', 'close_by')
  local deadline = now + tonumber(f[1])
  local close_by = tonumber(f[3] or '')
  if not close_by and tonumber(f[2]) > 0 then
    close_by = now + tonumber(f[2])
    redis.call('HSET', step, 'close_by', close_by)
  end
  if close_by then deadline = math.min(deadline, close_by) end
  redis.call('HSET', step, 'status', 'dispatched', 'attempt', attempt, 'lease', lease,
    'dispatched_at', now, 'complete_by', deadline)
  redis.call('HDEL', step, 'locked_by', 'started_at', 'attempt_deadline', 'finished_at',
    'retry_delay_ms', 'error', 'progress')
  redis.call('ZADD', deadlines, deadline, member)
  return lease
end

-- What the dispatching service publishes for a step:
-- {kind, lease, attempt, task, pool, payload, timeout_ms, index, compensates, max_attempts
--  (when the step chose it), retry (JSON), heartbeat_ms, priority, the job's traceparent}
-- Every script that calls it passes the job hash as KEYS[1] (a declared key: Cluster-safe);
-- the traceparent lets timers and recoveries join the job's trace without a round trip.
local function dispatch_reply(kind, step, index)
  local f = redis.call('HMGET', step, 'lease', 'attempt', 'task', 'pool', 'payload',
    'timeout_ms', 'compensates', 'max_explicit', 'retry', 'hb_ms', 'priority')
  return {kind, tonumber(f[1]), tonumber(f[2]), f[3], f[4], f[5], tonumber(f[6]), index,
    f[7] or '', f[8] or '', f[9] or '', tonumber(f[10] or '0'), f[11] or '',
    redis.call('HGET', KEYS[1], 'traceparent') or ''}
end

-- The lease of a step's first attempt while no agent has claimed it, else nil: only then
-- may a dispatch whose publish was perhaps lost be handed out again (one delivery claims).
local function unclaimed_first_attempt(step)
  local n = redis.call('HMGET', step, 'status', 'attempt', 'lease')
  if n[1] == 'dispatched' and n[2] == '1' then return tonumber(n[3]) end
  return nil
end

-- Fail a step on the spot (timeouts, cancellation); the scheduler then advances the job.
local function fail_step(step, now, err_type, message)
  redis.call('HSET', step, 'status', 'failed', 'finished_at', now, 'retry_delay_ms', -1,
    'error', cjson.encode({type = err_type, message = message, retryable = false}))
  redis.call('HDEL', step, 'locked_by')
end

-- Expire every key of a finished job (forward steps 0..n-1 and compensations n..2n-1).
local function expire_job(job, hist, step_prefix, nsteps, ttl)
  redis.call('EXPIRE', job, ttl)
  redis.call('EXPIRE', hist, ttl)
  for i = 0, 2 * nsteps - 1 do redis.call('EXPIRE', step_prefix .. i, ttl) end
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

local TERMINAL_JOB = 'succeeded,compensated,failed,cancelled,escalated'
