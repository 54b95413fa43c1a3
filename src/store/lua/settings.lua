-- settings.lua: change settings in the meta hash; ttl_seconds 0 removes the expiry.
-- ARGV: now_iso now_ms n field1 value1 ... if_match (context.lua).
-- Returns 'OK', 'NOT_FOUND' or 'PRECONDITION'.
if redis.call('EXISTS', meta) == 0 then return 'NOT_FOUND' end
if not version_matches() then return 'PRECONDITION' end
local n = tonumber(ARGV[3])
for i = 0, n - 1 do
  local f, v = ARGV[4 + 2 * i], ARGV[5 + 2 * i]
  redis.call('HSET', meta, f, v)
  if f == 'ttl_seconds' and tonumber(v) == 0 then
    for _, k in ipairs({meta, messages, state}) do redis.call('PERSIST', k) end
  end
end
redis.call('HSET', meta, 'last_updated', ARGV[1])
version_bump()
touch(ARGV[2])
return 'OK'
