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

-- Dispatch attempt `attempt` of a step: a new lease token (it only grows within the job).
local function dispatch(job, step, index, attempt, now, deadline, member, deadlines)
  local lease = redis.call('HINCRBY', job, 'lease_seq', 1)
  redis.call('HSET', step, 'status', 'dispatched', 'attempt', attempt, 'lease', lease,
    'dispatched_at', now, 'complete_by', deadline)
  redis.call('HDEL', step, 'locked_by', 'started_at', 'attempt_deadline', 'finished_at')
  redis.call('ZADD', deadlines, deadline, member)
  return lease
end

-- What the dispatching service needs to publish a step: {lease, attempt, task, pool, payload, timeout_ms}
local function dispatch_reply(kind, step, index)
  local f = redis.call('HMGET', step, 'lease', 'attempt', 'task', 'pool', 'payload', 'timeout_ms')
  return {kind, tonumber(f[1]), tonumber(f[2]), f[3], f[4], f[5], tonumber(f[6]), index}
end

-- Expire every key of a finished job.
local function expire_job(job, hist, step_prefix, nsteps, ttl)
  redis.call('EXPIRE', job, ttl)
  redis.call('EXPIRE', hist, ttl)
  for i = 0, nsteps - 1 do redis.call('EXPIRE', step_prefix .. i, ttl) end
end

local TERMINAL_JOB = 'succeeded,compensated,failed,cancelled,escalated'
