-- submit: XADD and the job records for a batch of jobs of one agent type, in one
-- step, so no worker ever sees an entry without its job and bulk submit costs one
-- round trip per batch.
-- KEYS: stream, index, agents set, one job key per job, then one dedupe key per job
-- that has a dedupe key (in job order), then the event stream (last).
-- ARGV: agent, submitted_at, score, source, dedupe_ttl, then one string per job: id,
-- repo, ref, commit, command, env, timeout, attempt, retry_of, dedupe, trigger (a JSON object of
-- the trigger fields, or ''), hold ('1': held for approval) joined by \x1f
-- (one argument per job instead of ten keeps client-side encoding cheap; validation
-- bans \x1f).
-- Returns one value per job: its stream id, or '=' .. id of the job already submitted
-- under its dedupe key (then nothing was written for it), or '' for a job held for approval:
-- its record has status 'waiting-approval' and no stream entry until approve.lua adds one. Job ids come from the
-- client, so a job whose record exists already (a retry after a lost reply) is not
-- written again: its stream id is returned as if it had just been written.
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
local n = #ARGV - 5
local events = KEYS[#KEYS]
local ttl = tonumber(ARGV[5])
local d = 3 + n
local out, scores = {}, {}
for i = 1, n do
  local v = split(ARGV[5 + i])
  local id = v[1]
  local jobkey = KEYS[3 + i]
  local existing = nil
  local written = redis.call('HGET', jobkey, 'stream_id')
  if not written and redis.call('EXISTS', jobkey) == 1 then written = '' end  -- a held job's record
  if v[10] ~= '' then d = d + 1 end
  if written then
    out[i] = written
  elseif v[10] ~= '' then
    if not redis.call('SET', KEYS[d], id, 'NX', 'EX', ttl) then
      existing = redis.call('GET', KEYS[d])
      -- the job it names may be gone (retention, purge): then this one takes the key
      local other = string.sub(jobkey, 1, #jobkey - #id) .. existing
      if redis.call('EXISTS', other) == 0 then
        redis.call('SET', KEYS[d], id, 'EX', ttl)
        existing = nil
      end
    end
  end
  if existing then
    out[i] = '=' .. existing
  elseif not written then
    local hold = v[12] == '1'
    local sid = ''
    if not hold then sid = redis.call('XADD', KEYS[1], '*', 'job', id) end
    local h = {'id', id, 'repo', v[2], 'ref', v[3], 'agent', ARGV[1], 'env', v[6],
               'timeout', v[7], 'source', ARGV[4], 'submitted_at', ARGV[2],
               'status', hold and 'waiting-approval' or 'queued', 'attempt', v[8], 'deliveries', '0'}
    if not hold then h[#h + 1] = 'stream_id'; h[#h + 1] = sid end
    if v[4] ~= '' then h[#h + 1] = 'commit'; h[#h + 1] = v[4] end
    if v[5] ~= '' then h[#h + 1] = 'command'; h[#h + 1] = v[5] end
    if v[9] ~= '' then h[#h + 1] = 'retry_of'; h[#h + 1] = v[9] end
    if v[10] ~= '' then h[#h + 1] = 'dedupe'; h[#h + 1] = v[10] end
    if v[11] and v[11] ~= '' then
      for k, val in pairs(cjson.decode(v[11])) do h[#h + 1] = k; h[#h + 1] = val end
    end
    redis.call('HSET', jobkey, unpack(h))
    job_event(events, id, hold and 'waiting-approval' or 'queued')  -- the reporter: docs/statuses.md
    scores[#scores + 1] = ARGV[3]
    scores[#scores + 1] = id
    out[i] = sid
  end
end
if #scores > 0 then
  redis.call('ZADD', KEYS[2], unpack(scores))
  redis.call('SADD', KEYS[3], ARGV[1])
end
return out
