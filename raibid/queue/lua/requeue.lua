-- requeue (after trim.lua, expire_log.lua): ack the old entry and add a fresh one (so
-- KEDA's lag sees it again), or dead-letter when the job has used its deliveries.
-- Used by release and reap. It first re-checks, in this same step, that the entry is
-- still pending for the consumer the caller saw (ARGV[7]) and has been idle at least
-- ARGV[8] ms: a worker that heartbeated or reclaimed it in between keeps its job.
-- KEYS: stream, job, dead-letter stream, event stream.
-- ARGV: group, sid, reason, now, max_deliveries, job id, consumer, min idle ms, log ttl.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[8], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[7] then return 'skipped' end
local d = tonumber(redis.call('HGET', KEYS[2], 'deliveries') or '0')
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
local status = redis.call('HGET', KEYS[2], 'status')
if (not status) or redis.call('HGET', KEYS[2], 'stream_id') ~= ARGV[2] or
   (status ~= 'running' and status ~= 'queued') then
  return 'acked'
end
if d >= tonumber(ARGV[5]) then
  local reason = ARGV[3] .. '; delivered ' .. d .. ' times (max_deliveries ' .. ARGV[5] .. ')'
  local did = redis.call('XADD', KEYS[3], '*', 'job', ARGV[6], 'reason', reason, 'stream', KEYS[1],
                        'stream_id', ARGV[2], 'at', ARGV[4])
  redis.call('HSET', KEYS[2], 'status', 'dead', 'error', reason, 'finished_at', ARGV[4], 'dead_id', did)
  expire_log(KEYS[2], ARGV[9])
  trim(KEYS[1], ARGV[1])
  job_event(KEYS[4], ARGV[6], 'dead')
  return 'dead'
end
local sid = redis.call('XADD', KEYS[1], '*', 'job', ARGV[6])
redis.call('HSET', KEYS[2], 'status', 'queued', 'stream_id', sid, 'error', ARGV[3], 'agent_pod', '')
redis.call('HDEL', KEYS[2], 'started_at', 'heartbeat_at', 'claim_token')
job_event(KEYS[4], ARGV[6], 'queued')
trim(KEYS[1], ARGV[1])
return 'requeued'
