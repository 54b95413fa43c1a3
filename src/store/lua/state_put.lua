-- state_put.lua: replace the whole state.
-- ARGV: now_iso now_ms n k1 v1 ... if_match (context.lua).
-- Returns 'OK', 'NOT_FOUND' or 'PRECONDITION'.
if redis.call('EXISTS', meta) == 0 then return 'NOT_FOUND' end
if not version_matches() then return 'PRECONDITION' end
redis.call('DEL', state)
local n = tonumber(ARGV[3])
for i = 0, n - 1 do redis.call('HSET', state, ARGV[4 + 2 * i], ARGV[5 + 2 * i]) end
redis.call('HSET', meta, 'last_updated', ARGV[1])
version_bump()
touch(ARGV[2])
return 'OK'
