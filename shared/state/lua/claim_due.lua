-- Claim a due member of a sorted set for a while: whoever moves its score first owns it.
-- KEYS[1] sorted set  ARGV[1] member  [2] now (ms)  [3] claimed until (ms)
-- Returns 1 when claimed, 0 when it is not due (someone else holds it, or it is gone).
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
