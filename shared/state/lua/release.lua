-- An agent shutting down hands back a step it could not finish: RUNNING -> DISPATCHED with
-- a new lease (fencing out the handler it stopped) and the same attempt number, since the
-- attempt was cut short rather than failed.
-- KEYS[1] job  KEYS[2] step  KEYS[3] history  KEYS[4] deadlines  KEYS[5] the agent's steps
-- ARGV[1] deadline member  [2] lease  [3] agent  [4] now  [5] step index
-- Returns {"dispatch", <dispatch reply>} or {"stale"} when the lease is no longer current.
local now, index = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('SREM', KEYS[5], ARGV[1])
local s = redis.call('HMGET', KEYS[2], 'status', 'lease', 'attempt')
if s[1] ~= 'running' or s[2] ~= ARGV[2] then return {'stale'} end
local lease = dispatch(KEYS[1], KEYS[2], tonumber(s[3]), now, ARGV[1], KEYS[4])
history(KEYS[3], now, ARGV[3], 'release', index, tonumber(s[3]), lease, 'running', 'dispatched',
  'agent shutting down')
return dispatch_reply('dispatch', KEYS[2], index)
