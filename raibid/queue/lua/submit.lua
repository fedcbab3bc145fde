-- submit: XADD and the job records for a batch of jobs of one agent type, in one
-- step, so no worker ever sees an entry without its job and bulk submit costs one
-- round trip per batch. KEYS: stream, index, agents set, then one job key per job.
-- ARGV: agent, submitted_at, score, source, then one string per job: id, repo, ref,
-- commit, command, env, timeout, attempt, retry_of joined by \x1f (one argument per
-- job instead of nine keeps client-side encoding cheap; validation bans \x1f).
local SEP = string.char(31)
local function split(s)
  local t, i = {}, 1
  while true do
    local j = string.find(s, SEP, i, true)
    if not j then t[#t + 1] = string.sub(s, i); return t end
    t[#t + 1] = string.sub(s, i, j - 1)
    i = j + 1
  end
end
local n = #KEYS - 3
local out, scores = {}, {}
for i = 1, n do
  local v = split(ARGV[4 + i])
  local id = v[1]
  local sid = redis.call('XADD', KEYS[1], '*', 'job', id)
  local h = {'id', id, 'repo', v[2], 'ref', v[3], 'agent', ARGV[1], 'env', v[6],
             'timeout', v[7], 'source', ARGV[4], 'submitted_at', ARGV[2], 'status', 'queued',
             'attempt', v[8], 'deliveries', '0', 'stream_id', sid}
  if v[4] ~= '' then h[#h + 1] = 'commit'; h[#h + 1] = v[4] end
  if v[5] ~= '' then h[#h + 1] = 'command'; h[#h + 1] = v[5] end
  if v[9] ~= '' then h[#h + 1] = 'retry_of'; h[#h + 1] = v[9] end
  redis.call('HSET', KEYS[3 + i], unpack(h))
  scores[#scores + 1] = ARGV[3]
  scores[#scores + 1] = id
  out[i] = sid
end
redis.call('ZADD', KEYS[2], unpack(scores))
redis.call('SADD', KEYS[3], ARGV[1])
return out
