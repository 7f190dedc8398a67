-- The agent whose record.lua advanced a job published the next step's dispatch: the
-- recorded step, kept in the deadline set in case that publish never happened, is done.
-- KEYS[1] job  KEYS[2] deadlines  ARGV[1] the recorded step's deadline member  [2] its index
local current = redis.call('HGET', KEYS[1], 'current')
if current and tonumber(current) > tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 1
