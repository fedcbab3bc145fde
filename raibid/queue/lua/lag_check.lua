-- lag_check: compare the lag XINFO GROUPS reports (what KEDA scales on) with the
-- truth, the number of entries after the group's last-delivered-id. When they
-- differ and ARGV[2] is '1', set entries-read to entries-added - undelivered with
-- XGROUP SETID ... ENTRIESREAD, which makes the lag exact again; otherwise write
-- nothing. Undelivered entries are never deleted (no XDEL; XTRIM MINID stops below
-- them), so the count is exact, and counting only undelivered entries keeps it cheap.
-- Redis 7.0 forgets entries-read on an AOF reload (nil), and an AOF replaying an
-- old SETID ... ENTRIESREAD followed by XCLAIM ... LASTID deliveries brings back a
-- stale number: both are caught here.
-- Returns {state, reported lag or -1 for nil, true lag}: state 'missing' (no stream or
-- group), 'ok', 'wrong' (not repaired) or 'repaired'.
local function field(arr, name)
  for i = 1, #arr, 2 do if arr[i] == name then return arr[i + 1] end end
  return nil
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', -1, 0} end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  if field(g, 'name') == ARGV[1] then
    local last = field(g, 'last-delivered-id')
    local lag = field(g, 'lag')
    local undelivered = #redis.call('XRANGE', KEYS[1], '(' .. last, '+')
    if lag == undelivered then return {'ok', lag, undelivered} end
    if lag == nil or lag == false then lag = -1 end
    if ARGV[2] ~= '1' then return {'wrong', lag, undelivered} end
    local added = field(redis.call('XINFO', 'STREAM', KEYS[1]), 'entries-added')
    redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], last, 'ENTRIESREAD', added - undelivered)
    return {'repaired', lag, undelivered}
  end
end
return {'missing', -1, 0}
