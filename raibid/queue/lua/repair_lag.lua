-- After an AOF reload Redis 7.0 can forget a group's entries-read, so XINFO GROUPS
-- reports lag nil and KEDA sees 0: scaled to zero, nothing would ever start again.
-- Recompute it from entries-added minus the undelivered entries (we never XDEL
-- undelivered entries, so this is exact) and set it with XGROUP SETID ... ENTRIESREAD.
local function field(arr, name)
  for i = 1, #arr, 2 do if arr[i] == name then return arr[i + 1] end end
  return nil
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  if field(g, 'name') == ARGV[1] then
    if field(g, 'entries-read') then return 0 end
    local last = field(g, 'last-delivered-id')
    local added = field(redis.call('XINFO', 'STREAM', KEYS[1]), 'entries-added')
    local undelivered = #redis.call('XRANGE', KEYS[1], '(' .. last, '+')
    redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], last, 'ENTRIESREAD', added - undelivered)
    return 1
  end
end
return 0
