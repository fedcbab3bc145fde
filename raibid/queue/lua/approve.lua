-- approve (after event.lua): a job held for approval (status 'waiting-approval', on no stream) gets
-- its stream entry and becomes 'queued', in one step, so two approvals of one job add one entry and
-- KEDA sees the job only from now on. Adds a kind=job event (raibid.queue.events) for the reporter.
-- KEYS: job, the stream of the job's pool, the event stream (last).
-- ARGV: now, the pool the caller read (the job's agent).
-- Returns {'ok', stream id} | {'missing'} | {'status', status}.
local h = redis.call('HMGET', KEYS[1], 'status', 'agent', 'id')
if not h[1] then return {'missing'} end
if h[1] ~= 'waiting-approval' then return {'status', h[1]} end
if h[2] ~= ARGV[2] then return {'status', 'moved to pool ' .. (h[2] or '?')} end
local sid = redis.call('XADD', KEYS[2], '*', 'job', h[3])
redis.call('HSET', KEYS[1], 'status', 'queued', 'stream_id', sid, 'approved_at', ARGV[1])
job_event(KEYS[#KEYS], h[3], 'queued')
return {'ok', sid}
