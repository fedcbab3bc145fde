-- Fragment: delete finished job records (and their logs and index entries) submitted
-- before the cutoff (ms), at most `limit` index entries per call; jobs still queued or
-- running are kept. Returns the number of index entries removed.
local TERMINAL = {succeeded = true, failed = true, cancelled = true, dead = true}
local function retain(index, prefix, cutoff, limit)
  local n = 0
  for _, id in ipairs(redis.call('ZRANGE', index, '-inf', cutoff, 'BYSCORE', 'LIMIT', 0, limit)) do
    local key = prefix .. id
    local status = redis.call('HGET', key, 'status')
    if (not status) or TERMINAL[status] then
      redis.call('DEL', key, key .. ':log', key .. ':statuses')
      redis.call('ZREM', index, id)
      n = n + 1
    end
  end
  return n
end
