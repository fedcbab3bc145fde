-- append_log: a batch of lines into a job's log stream, one entry (field `line`) per line,
-- trimmed approximately to MAXLEN. One call per batch instead of one XADD round trip per
-- line, and the lines travel joined, so the client encodes one argument per batch.
--
-- Logs are trimmed before Redis reaches its limit: when the server has a maxmemory and
-- used_memory is above HIGH (a fraction of it), the logs of finished jobs are deleted, oldest
-- job first (the job's record says `log_trimmed`), and if that is not enough this batch is not
-- stored: the log gets one marker line instead (the job's `log_full`). Job records are never
-- deleted here, so with maxmemory-policy noeviction a flood of logs cannot push them out, and
-- a write of a job's result always finds room.
--
-- KEYS[1] the log stream, KEYS[2] the job's record, KEYS[3] the job index (ids by submit time).
-- ARGV[1] maxlen; ARGV[2] the high-water fraction of maxmemory (0: never trim); ARGV[3] the job
-- key prefix; ARGV[4] 'joined' (ARGV[5]: the lines joined by '\n', none containing '\n') or
-- 'each' (ARGV[5..]: one line each). Returns how many lines were added (-1: none, Redis is full).
local function used_and_high()
  local frac = tonumber(ARGV[2]) or 0
  if frac <= 0 then return 0, 0 end
  local info = redis.call('INFO', 'memory')
  local max = tonumber(string.match(info, 'maxmemory:(%d+)')) or 0
  if max == 0 then return 0, 0 end
  return tonumber(string.match(info, 'used_memory:(%d+)')) or 0, math.floor(max * frac)
end

local used, high = used_and_high()
if high > 0 and used > high then
  local terminal = {succeeded = true, failed = true, cancelled = true, dead = true}
  local start = 0
  while used > high and start < 5000 do
    local ids = redis.call('ZRANGE', KEYS[3], start, start + 199)
    if #ids == 0 then break end
    for _, id in ipairs(ids) do
      local job = ARGV[3] .. id
      if terminal[redis.call('HGET', job, 'status') or ''] and redis.call('DEL', job .. ':log') == 1 then
        redis.call('HSET', job, 'log_trimmed', '1')
      end
    end
    used, high = used_and_high()
    start = start + 200
  end
  if used > high then
    if redis.call('HSETNX', KEYS[2], 'log_full', '1') == 1 then
      redis.call('XADD', KEYS[1], '*', 'line',
                 '[log truncated: Redis is near its maxmemory; raibid stopped storing this log]')
    end
    return -1
  end
end

local n = 0
if ARGV[4] == 'joined' then
  local s, pos = ARGV[5], 1
  while true do
    local e = string.find(s, '\n', pos, true)
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'line', string.sub(s, pos, (e or 0) - 1))
    n = n + 1
    if not e then break end
    pos = e + 1
  end
else
  for i = 5, #ARGV do
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'line', ARGV[i])
    n = n + 1
  end
end
return n
