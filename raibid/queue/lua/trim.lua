-- Trim acked history below both the oldest pending entry and the next undelivered
-- one: XTRIM MINID never touches undelivered entries, so the lag KEDA reads stays exact.
local function trim(stream, group)
  local groups = redis.call('XINFO', 'GROUPS', stream)
  local last = nil
  for _, g in ipairs(groups) do
    local name, ld = nil, nil
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then ld = g[i + 1] end
    end
    if name == group then last = ld end
  end
  if not last or last == '0-0' then return end
  local ms, seq = string.match(last, '^(%d+)-(%d+)$')
  local minid = ms .. '-' .. (tonumber(seq) + 1)
  local p = redis.call('XPENDING', stream, group)
  if p[1] > 0 then minid = p[2] end
  redis.call('XTRIM', stream, 'MINID', minid)
end
