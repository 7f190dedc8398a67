-- The agent whose record.lua followed a success published the next step's dispatch: the
-- recorded step, kept in the deadline set in case that publish never happened, is done.
-- KEYS[1] job  KEYS[2] deadlines. A: Settle (records.py). Returns Settled.
local current = redis.call('HGET', KEYS[1], 'current')
local settled = current ~= false and tonumber(current) > A.step
if settled then redis.call('ZREM', KEYS[2], A.job_id .. '|' .. A.step) end
return reply({settled = settled})
