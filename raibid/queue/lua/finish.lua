-- finish (after owns.lua, trim.lua, expire_log.lua, retain.lua): record a terminal
-- state, ack, expire the log, trim the stream and drop job records past retention.
-- KEYS: stream, job, log, index, event stream. ARGV: group, sid, consumer, now, status, exit code,
-- error, log ttl, retention cutoff (ms; '' for none), job key prefix, images built ('' for none).
-- Returns 1, or 0 when this consumer no longer owns the job. A repeat of a finish
-- that was applied (same entry, consumer and status; its reply was lost) returns 1.
if not owns(KEYS[1], ARGV[1], ARGV[2], ARGV[3], KEYS[2]) then
  local h = redis.call('HMGET', KEYS[2], 'status', 'stream_id', 'agent_pod')
  if h[1] == ARGV[5] and h[2] == ARGV[2] and h[3] == ARGV[3] and
     #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then
    return 1
  end
  return 0
end
redis.call('HSET', KEYS[2], 'status', ARGV[5], 'finished_at', ARGV[4], 'exit_code', ARGV[6], 'error', ARGV[7])
if ARGV[11] ~= '' then redis.call('HSET', KEYS[2], 'image', ARGV[11]) end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
job_event(KEYS[5], redis.call('HGET', KEYS[2], 'id'), ARGV[5])
expire_log(KEYS[2], ARGV[8])
trim(KEYS[1], ARGV[1])
if ARGV[9] ~= '' then retain(KEYS[4], ARGV[10], ARGV[9], 20) end
return 1
