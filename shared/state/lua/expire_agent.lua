-- A supervisor found an agent dead or hung: make the deadlines of the steps it still holds
-- due now, so the next deadline scan recovers them. A step that has moved on (recorded,
-- or re-dispatched to another agent) is left alone.
-- KEYS[1] the agent's steps (set of job|step)  KEYS[2] deadlines
-- A: ExpireAgent (records.py): step key of job J, step I is A.before .. J .. A.after .. I
-- Returns MadeDue.
local n = 0
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local job, step = string.match(member, '^(.*)|(%d+)$')
  if job then
    local s = redis.call('HMGET', A.before .. job .. A.after .. step, 'status', 'locked_by')
    if s[1] == STEP.RUNNING and s[2] == A.agent then
      n = n + redis.call('ZADD', KEYS[2], 'XX', 'LT', 'CH', A.now, member)
    end
  end
end
redis.call('DEL', KEYS[1])
return reply({made_due = n})
