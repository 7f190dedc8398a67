-- Record a submission that cannot be accepted as a FAILED job, unless the id is taken.
-- KEYS[1] job  KEYS[2] history  KEYS[3] jobs index
-- ARGV[1] job_id  [2] now  [3] by  [4] error (JSON)  [5] reply_to  [6] correlation_id  [7] ttl_s
-- Returns 1 when recorded, 0 when a job with that id already exists (it is left alone).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'status', 'failed', 'created_at', ARGV[2],
  'updated_at', ARGV[2], 'finished_at', ARGV[2], 'nsteps', 0, 'current', 0, 'submitted_by', ARGV[3],
  'error', ARGV[4], 'reply_to', ARGV[5], 'correlation_id', ARGV[6], 'lease_seq', 0)
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
history(KEYS[2], ARGV[2], ARGV[3], 'reject', nil, nil, nil, nil, 'failed', cjson.decode(ARGV[4]).message)
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('EXPIRE', KEYS[2], ARGV[7])
return 1
