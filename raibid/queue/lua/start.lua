-- start: called right after a worker received an entry. Skips cancelled, finished,
-- stale or missing jobs (acking them) and dead-letters jobs delivered too often.
local status = redis.call('HGET', KEYS[2], 'status')
local sid = redis.call('HGET', KEYS[2], 'stream_id')
if (not status) or sid ~= ARGV[2] or (status ~= 'queued' and status ~= 'running') then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return status or 'missing'
end
local d = tonumber(redis.call('HGET', KEYS[2], 'deliveries') or '0')
if d >= tonumber(ARGV[5]) then
  local reason = 'delivered ' .. d .. ' times without finishing (max_deliveries ' .. ARGV[5] .. ')'
  redis.call('XADD', KEYS[3], '*', 'job', ARGV[6], 'reason', reason, 'stream', KEYS[1], 'stream_id', ARGV[2],
             'at', ARGV[4])
  redis.call('HSET', KEYS[2], 'status', 'dead', 'error', reason, 'finished_at', ARGV[4])
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return 'dead'
end
redis.call('HSET', KEYS[2], 'status', 'running', 'agent_pod', ARGV[3], 'started_at', ARGV[4],
           'heartbeat_at', ARGV[4], 'deliveries', d + 1)
return 'ok'
