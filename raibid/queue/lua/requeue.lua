-- requeue: ack the old entry and add a fresh one (so KEDA's lag sees it again),
-- or dead-letter when the job has used its deliveries. Used by release and reap.
local d = tonumber(redis.call('HGET', KEYS[2], 'deliveries') or '0')
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
local status = redis.call('HGET', KEYS[2], 'status')
if (not status) or redis.call('HGET', KEYS[2], 'stream_id') ~= ARGV[2] or
   (status ~= 'running' and status ~= 'queued') then
  return 'acked'
end
if d >= tonumber(ARGV[5]) then
  local reason = ARGV[3] .. '; delivered ' .. d .. ' times (max_deliveries ' .. ARGV[5] .. ')'
  redis.call('XADD', KEYS[3], '*', 'job', ARGV[6], 'reason', reason, 'stream', KEYS[1], 'stream_id', ARGV[2],
             'at', ARGV[4])
  redis.call('HSET', KEYS[2], 'status', 'dead', 'error', reason, 'finished_at', ARGV[4])
  trim(KEYS[1], ARGV[1])
  return 'dead'
end
local sid = redis.call('XADD', KEYS[1], '*', 'job', ARGV[6])
redis.call('HSET', KEYS[2], 'status', 'queued', 'stream_id', sid, 'error', ARGV[3], 'agent_pod', '')
redis.call('HDEL', KEYS[2], 'started_at', 'heartbeat_at')
trim(KEYS[1], ARGV[1])
return 'requeued'
