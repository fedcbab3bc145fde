-- reap_consumers: delete the group's consumers that hold no pending entries and have
-- been idle at least ARGV[2] ms (dead agent pods), checked and deleted in one step so
-- a consumer that just read an entry is never deleted with it. Returns their names.
local function field(arr, name)
  for i = 1, #arr, 2 do if arr[i] == name then return arr[i + 1] end end
  return nil
end
local gone = {}
if redis.call('EXISTS', KEYS[1]) == 0 then return gone end
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  if field(c, 'pending') == 0 and field(c, 'idle') >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], field(c, 'name'))
    gone[#gone + 1] = field(c, 'name')
  end
end
return gone
