-- finish (after owns.lua and trim.lua): record a terminal state, ack, expire the log, trim.
-- Returns 1, or 0 when this consumer no longer owns the job.
if not owns(KEYS[1], ARGV[1], ARGV[2], ARGV[3], KEYS[2]) then
  return 0
end
redis.call('HSET', KEYS[2], 'status', ARGV[5], 'finished_at', ARGV[4], 'exit_code', ARGV[6], 'error', ARGV[7])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if tonumber(ARGV[8]) > 0 then redis.call('EXPIRE', KEYS[3], ARGV[8]) end
trim(KEYS[1], ARGV[1])
return 1
