-- cancel (after expire_log.lua): a queued job (or one waiting for approval) is cancelled at once (and its log starts
-- expiring); a running one gets cancel_requested, which its agent sees on the next
-- heartbeat. KEYS: job, event stream. ARGV: now, log ttl.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'queued' or status == 'waiting-approval' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1], 'error', 'cancelled before start')
  expire_log(KEYS[1], ARGV[2])
  job_event(KEYS[2], redis.call('HGET', KEYS[1], 'id'), 'cancelled')
  return '+cancelled'
end
if status == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  return '+requested'
end
return status
