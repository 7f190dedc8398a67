-- Record a submission that cannot be accepted as a FAILED job, unless the id is taken.
-- KEYS[1] job  KEYS[2] history  KEYS[3] jobs index. A: FailSubmission (records.py).
-- Returns Refused: recorded false when a job with that id exists (it is left alone).
if redis.call('EXISTS', KEYS[1]) == 1 then return reply({recorded = false}) end
redis.call('HSET', KEYS[1], 'id', A.job_id, 'status', JOB.FAILED, 'created_at', A.now,
  'updated_at', A.now, 'finished_at', A.now, 'nsteps', 0, 'current', 0, 'submitted_by', A.by,
  'error', A.error, 'reply_to', A.reply_to, 'correlation_id', A.correlation_id, 'lease_seq', 0)
redis.call('ZADD', KEYS[3], A.now, A.job_id)
history(KEYS[2], A.now, A.by, 'reject', nil, nil, nil, nil, JOB.FAILED,
  cjson.decode(A.error).message)
redis.call('EXPIRE', KEYS[1], A.ttl_s)
redis.call('EXPIRE', KEYS[2], A.ttl_s)
return reply({recorded = true})
