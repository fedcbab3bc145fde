-- start: called right after a worker received an entry (or found it already pending
-- for itself). Skips cancelled, finished, stale or missing jobs (acking them) and
-- dead-letters jobs delivered too often.
-- KEYS: stream, job, dead-letter stream, event stream.
-- ARGV: group, sid, consumer, now, max_deliveries, job id, claim token, log ttl.
-- Returns 'ok', 'resumed' (this very worker object had started it already: its reply
-- was lost, so no second delivery is counted), 'dead', 'taken' (the entry is no longer
-- pending for this consumer: another worker reclaimed it after this one listed it;
-- nothing is written), or the skipped job's status.
-- A started entry's idle time is reset (XCLAIM ... JUSTID, as a heartbeat does): an entry
-- delivered long ago whose reply was lost would otherwise be reclaimable at once.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 'taken' end
local status = redis.call('HGET', KEYS[2], 'status')
local sid = redis.call('HGET', KEYS[2], 'stream_id')
if (not status) or sid ~= ARGV[2] or (status ~= 'queued' and status ~= 'running') then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return status or 'missing'
end
if status == 'running' and redis.call('HGET', KEYS[2], 'agent_pod') == ARGV[3] and
   redis.call('HGET', KEYS[2], 'claim_token') == ARGV[7] then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
  redis.call('HSET', KEYS[2], 'heartbeat_at', ARGV[4])
  return 'resumed'
end
local d = tonumber(redis.call('HGET', KEYS[2], 'deliveries') or '0')
if d >= tonumber(ARGV[5]) then
  local reason = 'delivered ' .. d .. ' times without finishing (max_deliveries ' .. ARGV[5] .. ')'
  local did = redis.call('XADD', KEYS[3], '*', 'job', ARGV[6], 'reason', reason, 'stream', KEYS[1],
                        'stream_id', ARGV[2], 'at', ARGV[4])
  redis.call('HSET', KEYS[2], 'status', 'dead', 'error', reason, 'finished_at', ARGV[4], 'dead_id', did)
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  expire_log(KEYS[2], ARGV[8])
  job_event(KEYS[4], ARGV[6], 'dead')
  return 'dead'
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
redis.call('HSET', KEYS[2], 'status', 'running', 'agent_pod', ARGV[3], 'started_at', ARGV[4],
           'heartbeat_at', ARGV[4], 'deliveries', d + 1, 'claim_token', ARGV[7])
job_event(KEYS[4], ARGV[6], 'running')
return 'ok'
