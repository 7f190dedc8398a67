-- The supervisor takes one overdue deadline. Atomic claim: the deadline must still be due,
-- and taking it moves it, so two supervisors never recover the same step twice.
-- A step whose attempt ran out of time (or whose agent was lost) fails with the failure
-- that says why, and is followed like any failure (_lib's follow: a retry after its
-- backoff, compensation, the job's end). A recorded outcome still due is one that no
-- scheduler took up, or whose follow-up an agent did not confirm publishing: it is
-- followed here (a follow-up already made is handed out again while unclaimed, and stays
-- due until it is claimed).
-- KEYS: the job script's six. A: Recover (records.py). Returns NotDue, Gone or Recovered.
local c = job_context()
local index = A.step
local member = c.id .. '|' .. index
local score = redis.call('ZSCORE', c.deadlines, member)
if not score or tonumber(score) > c.now then return reply({kind = 'not_due'}) end

local j = redis.call('HMGET', c.job, 'status', 'current', 'cancel_requested')
local s = redis.call('HMGET', KEYS[2], 'status', 'attempt', 'lease', 'locked_by',
  'attempt_deadline', 'close_by')
local function gone()
  redis.call('ZREM', c.deadlines, member)
  return reply({kind = 'gone'})
end
if j[1] == false or s[1] == false or JOB_TERMINAL[j[1]] then return gone() end

if s[1] == STEP.SUCCEEDED or s[1] == STEP.FAILED then
  local r = follow(c, index)
  if r.kind == 'stale' then return gone() end
  if r.again then
    -- Due again later, as every recovery: if this publish is lost too, another round
    -- repairs it; once the step is claimed, the next round finds it gone.
    redis.call('ZADD', c.deadlines, A.announce_at, member)
    history(c.hist, c.now, c.by, 'republish', r.step, r.attempt, r.lease, STEP.DISPATCHED,
      STEP.DISPATCHED, 'its publisher did not confirm publishing it')
  end
  return reply({kind = 'recovered', repair = true, next = r})
end
if tonumber(j[2]) ~= index or not (s[1] == STEP.DISPATCHED or s[1] == STEP.RUNNING) then
  return gone()
end

-- Why the deadline passed decides the failure: the step's overall time limit, one
-- attempt's limit, a lease that was not renewed (agent dead or hung), or no agent took
-- the dispatch. A cancelled job's forward step is not tried again.
local failure, reason
if s[6] and c.now >= tonumber(s[6]) then
  failure, reason = FAILURE.SCHEDULE_TO_CLOSE_TIMEOUT, 'schedule-to-close timeout'
elseif s[1] == STEP.RUNNING and s[5] and c.now >= tonumber(s[5]) then
  failure, reason = FAILURE.START_TO_CLOSE_TIMEOUT, 'start-to-close timeout'
elseif s[1] == STEP.RUNNING then
  failure, reason = FAILURE.LEASE_EXPIRED, 'lease expired (agent ' .. (s[4] or '?') .. ')'
else
  failure, reason = FAILURE.SCHEDULE_TO_START_TIMEOUT, 'not claimed in time'
end
local cause = failure
if j[3] == '1' and j[1] ~= JOB.COMPENSATING then
  failure, reason = FAILURE.CANCELLED, 'the job was cancelled; ' .. reason
end
fail_step(c, KEYS[2], index, 'timeout_fail', failure, 'attempt ' .. s[2] .. ': ' .. reason)
return reply({kind = 'recovered', failure = cause, repair = false, next = follow(c, index)})
