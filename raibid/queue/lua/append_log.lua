-- append_log: a batch of lines into a job's log stream, one entry (field `line`) per line,
-- trimmed approximately to MAXLEN. One call per batch instead of one XADD round trip per
-- line, and the lines travel joined, so the client encodes one argument per batch.
-- KEYS[1] the log stream; ARGV[1] maxlen; ARGV[2] 'joined' (ARGV[3]: the lines joined by
-- '\n', none containing '\n') or 'each' (ARGV[3..]: one line each). Returns how many were added.
local n = 0
if ARGV[2] == 'joined' then
  local s, pos = ARGV[3], 1
  while true do
    local e = string.find(s, '\n', pos, true)
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'line', string.sub(s, pos, (e or 0) - 1))
    n = n + 1
    if not e then break end
    pos = e + 1
  end
else
  for i = 3, #ARGV do
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'line', ARGV[i])
    n = n + 1
  end
end
return n
