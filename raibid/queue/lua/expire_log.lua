-- Fragment: a job that reached a terminal state keeps its log for log_ttl seconds.
-- The log key is the job key plus ':log' (keys.py).
local function expire_log(jobkey, ttl)
  if tonumber(ttl) > 0 then redis.call('EXPIRE', jobkey .. ':log', ttl) end
end
