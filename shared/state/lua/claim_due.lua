-- Claim a due member of a sorted set for a while: whoever moves its score first owns it.
-- KEYS[1] sorted set. A: ClaimDue (records.py). Returns Claimed: false when it is not due
-- (someone else holds it, or it is gone).
local score = redis.call('ZSCORE', KEYS[1], A.member)
if not score or tonumber(score) > A.now then return reply({claimed = false}) end
redis.call('ZADD', KEYS[1], A.until_ms, A.member)
return reply({claimed = true})
