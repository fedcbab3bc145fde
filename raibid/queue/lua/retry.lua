-- retry: enqueue a failed, dead or cancelled job again as a new job (attempt + 1,
-- retry_of / retried_by linking them), in one step, so two concurrent retries of one
-- job make one new attempt. With ARGV[5] = '1' (dlq retry) the job must still be in
-- the dead-letter stream (its entry id is in the record's dead_id) and leaves it.
-- The new attempt goes to the pool the caller routed it to (ARGV[6]; its stream is KEYS[2]),
-- which is today's trust decision, not necessarily the old attempt's pool.
-- KEYS: old job, the new attempt's pool stream, index, agents set, new job, dead-letter stream, event stream.
-- ARGV: new id, submitted_at, score (ms), job key prefix, dlq flag, pool, then the names of the
-- optional fields the new attempt copies when set (commit, command and the trigger fields).
-- Returns {'ok', new stream id} | {'missing'} | {'retried', id} | {'status', status} | {'not-dead'}.
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return {'missing'} end
local old = {}
for i = 1, #h, 2 do old[h[i]] = h[i + 1] end
if old['retried_by'] and old['retried_by'] ~= '' and
   redis.call('EXISTS', ARGV[4] .. old['retried_by']) == 1 then
  return {'retried', old['retried_by']}
end
local st = old['status']
if st ~= 'failed' and st ~= 'dead' and st ~= 'cancelled' then return {'status', st or ''} end
if ARGV[5] == '1' then
  local did = old['dead_id']
  if st ~= 'dead' or not did or #redis.call('XRANGE', KEYS[6], did, did) == 0 then return {'not-dead'} end
  redis.call('XDEL', KEYS[6], did)
end
local sid = redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
local attempt = tonumber(old['attempt'] or '1') or 1
local new = {'id', ARGV[1], 'repo', old['repo'] or '', 'ref', old['ref'] or '', 'agent', ARGV[6],
             'env', old['env'] or '{}', 'timeout', old['timeout'] or '', 'source', old['source'] or 'cli',
             'submitted_at', ARGV[2], 'status', 'queued', 'attempt', attempt + 1, 'deliveries', '0',
             'stream_id', sid, 'retry_of', old['id'] or ''}
for i = 7, #ARGV do
  local k = ARGV[i]
  if old[k] and old[k] ~= '' then new[#new + 1] = k; new[#new + 1] = old[k] end
end
redis.call('HSET', KEYS[5], unpack(new))
redis.call('HSET', KEYS[1], 'retried_by', ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[6])
job_event(KEYS[7], ARGV[1], 'queued')
return {'ok', sid}
