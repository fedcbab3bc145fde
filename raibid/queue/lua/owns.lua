-- Own-check shared by heartbeat/finish/release: the job still points at this entry,
-- and the entry is still pending for this consumer.
local function owns(stream, group, sid, consumer, jobkey)
  if redis.call('HGET', jobkey, 'stream_id') ~= sid then return false end
  if redis.call('HGET', jobkey, 'status') ~= 'running' then return false end
  local p = redis.call('XPENDING', stream, group, sid, sid, 1)
  return #p == 1 and p[1][2] == consumer
end
