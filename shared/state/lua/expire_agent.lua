-- A supervisor found an agent dead or hung: make the deadlines of the steps it still holds
-- due now, so the next deadline scan recovers them. A step that has moved on (recorded,
-- or re-dispatched to another agent) is left alone.
-- KEYS[1] the agent's steps (set of job|step)  KEYS[2] deadlines
-- ARGV[1] agent id  [2] now  [3] step key format: ARGV[3] .. job .. ARGV[4] .. step
-- Returns how many steps were made due.
local n = 0
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local job, step = string.match(member, '^(.*)|(%d+)$')
  if job then
    local s = redis.call('HMGET', ARGV[3] .. job .. ARGV[4] .. step, 'status', 'locked_by')
    if s[1] == 'running' and s[2] == ARGV[1] then
      n = n + redis.call('ZADD', KEYS[2], 'XX', 'LT', 'CH', ARGV[2], member)
    end
  end
end
redis.call('DEL', KEYS[1])
return n
