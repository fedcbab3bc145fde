-- heartbeat (after owns.lua): reset the entry's idle time with XCLAIM ... JUSTID.
-- Returns -1 when the job is no longer ours, 1 when a cancel was requested, else 0.
if not owns(KEYS[1], ARGV[1], ARGV[2], ARGV[3], KEYS[2]) then return -1 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
redis.call('HSET', KEYS[2], 'heartbeat_at', ARGV[4])
if redis.call('HGET', KEYS[2], 'cancel_requested') == '1' then return 1 end
return 0
