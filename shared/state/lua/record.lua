-- An agent records the outcome of its attempt: RUNNING -> SUCCEEDED | FAILED.
-- Only the holder of the current lease may; a late result is rejected and recorded.
-- The step stays in the deadline set until the scheduler advances the job, so an outcome
-- whose announcement was lost is re-announced by the supervisor.
-- KEYS[1] job  KEYS[2] step  KEYS[3] history  KEYS[4] deadlines  KEYS[5] the agent's steps
-- ARGV[1] deadline member  [2] lease  [3] agent  [4] now  [5] new status  [6] result (JSON or "")
--     [7] error (JSON or "")  [8] announce deadline (ms)  [9] allowed from (csv)  [10] step index
--     [11] retry delay (ms; -1: no further attempt)  [12] ttl_s of a job this step ends,
--     "" for none: when a forward step of a running job succeeds, the job advances right
--     here, sparing the scheduler round trip: the last step ends the job; an earlier one
--     dispatches the next step, which the agent then publishes. Every other outcome is
--     announced and advanced by a scheduler as usual  [13] step key prefix (with [12])
-- Returns {"ok"}, {"finished", "succeeded", reply_to, correlation_id, result, ""},
--      {"dispatch", <dispatch reply of the next step>} or {"stale", step status, lease}.
-- After a "dispatch" the recorded step stays in the deadline set until the agent has
-- published it (settle_advance.lua): if the agent dies first, the supervisor publishes it.
local now = tonumber(ARGV[4])
local step = tonumber(ARGV[10])
redis.call('SREM', KEYS[5], ARGV[1])  -- accepted or stale, this agent is done with it
local s = redis.call('HMGET', KEYS[2], 'status', 'lease', 'attempt')
if s[1] == false then return {'stale', 'missing', 0} end
if s[2] ~= ARGV[2] or not allowed(ARGV[9], s[1]) then
  history(KEYS[3], now, ARGV[3], 'stale_result_rejected', step, nil, tonumber(ARGV[2]), s[1], ARGV[5],
    'current lease ' .. s[2])
  return {'stale', s[1], tonumber(s[2])}
end
redis.call('HSET', KEYS[2], 'status', ARGV[5], 'finished_at', now, 'retry_delay_ms', ARGV[11])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[2], 'result', ARGV[6]) end
local detail = nil
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[2], 'error', ARGV[7])
  local e = cjson.decode(ARGV[7])
  detail = e.type .. ': ' .. e.message
end
history(KEYS[3], now, ARGV[3], ARGV[5] == 'succeeded' and 'succeed' or 'fail', step,
  tonumber(s[3]), tonumber(s[2]), s[1], ARGV[5], detail)
if ARGV[12] ~= '' and ARGV[5] == 'succeeded' then
  local j = redis.call('HMGET', KEYS[1], 'status', 'current', 'nsteps', 'cancel_requested',
    'reply_to', 'correlation_id', 'id', 'notify')
  local nsteps = tonumber(j[3])
  local advances = j[1] == 'running' and tonumber(j[2]) == step and j[4] ~= '1'
  if advances and step + 1 < nsteps then
    redis.call('HSET', KEYS[1], 'current', step + 1, 'updated_at', now)
    redis.call('ZADD', KEYS[4], ARGV[8], ARGV[1])
    local key = ARGV[13] .. (step + 1)
    local lease = dispatch(KEYS[1], key, 1, now, j[7] .. '|' .. (step + 1), KEYS[4])
    history(KEYS[3], now, ARGV[3], 'dispatch', step + 1, 1, lease, 'pending', 'dispatched', nil)
    return dispatch_reply('dispatch', key, step + 1)
  end
  if advances and step + 1 == nsteps then
    local result = ARGV[6]
    redis.call('HSET', KEYS[1], 'status', 'succeeded', 'updated_at', now, 'finished_at', now,
      'result', result)
    redis.call('ZREM', KEYS[4], ARGV[1])
    history(KEYS[3], now, ARGV[3], 'succeed', nil, nil, nil, 'running', 'succeeded', nil)
    expire_job(KEYS[1], KEYS[3], ARGV[13], nsteps, ARGV[12])
    notify_end(j[8], j[7], 'succeeded', result, nil)
    return {'finished', 'succeeded', j[5], j[6], result, ''}
  end
end
redis.call('HSET', KEYS[1], 'updated_at', now)
redis.call('ZADD', KEYS[4], ARGV[8], ARGV[1])
return {'ok'}
