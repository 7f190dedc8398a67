-- An agent records the outcome of its attempt: RUNNING -> SUCCEEDED | FAILED.
-- Only the holder of the current lease may; a late result is rejected and recorded.
-- The step stays in the deadline set until the scheduler advances the job, so an outcome
-- whose announcement was lost is re-announced by the supervisor.
-- KEYS[1] job  KEYS[2] step  KEYS[3] history  KEYS[4] deadlines  KEYS[5] the agent's steps
-- ARGV[1] deadline member  [2] lease  [3] agent  [4] now  [5] new status  [6] result (JSON or "")
--     [7] error (JSON or "")  [8] announce deadline (ms)  [9] allowed from (csv)  [10] step index
--     [11] retry delay (ms; -1: no further attempt)
-- Returns {"ok"} or {"stale", step status, current lease}.
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
redis.call('HSET', KEYS[1], 'updated_at', now)
redis.call('ZADD', KEYS[4], ARGV[8], ARGV[1])
history(KEYS[3], now, ARGV[3], ARGV[5] == 'succeeded' and 'succeed' or 'fail', step,
  tonumber(s[3]), tonumber(s[2]), s[1], ARGV[5], detail)
return {'ok'}
