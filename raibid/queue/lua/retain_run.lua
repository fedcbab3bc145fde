-- retain_run (after retain.lua): one bounded retention pass for reap.
-- KEYS: index. ARGV: job key prefix, cutoff (ms), limit.
return retain(KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]))
