-- state_patch.lua: merge into the state; the size check runs on the merged
-- result and nothing changes when it fails.
-- ARGV: now_iso now_ms max_bytes n (op key value)... op 's' sets, 'd' deletes.
-- if_match (context.lua). Returns 'OK', 'NOT_FOUND', 'PRECONDITION' or 'TOO_LARGE'.
if redis.call('EXISTS', meta) == 0 then return 'NOT_FOUND' end
if not version_matches() then return 'PRECONDITION' end
local cur = redis.call('HGETALL', state)
local m = {}
for i = 1, #cur, 2 do m[cur[i]] = cur[i + 1] end
local n = tonumber(ARGV[4])
for i = 0, n - 1 do
  if ARGV[5 + 3 * i] == 'd' then m[ARGV[6 + 3 * i]] = nil
  else m[ARGV[6 + 3 * i]] = ARGV[7 + 3 * i] end
end
local size = 0
for k, v in pairs(m) do size = size + #k + #v end
if size > tonumber(ARGV[3]) then return 'TOO_LARGE' end
for i = 0, n - 1 do
  if ARGV[5 + 3 * i] == 'd' then redis.call('HDEL', state, ARGV[6 + 3 * i])
  else redis.call('HSET', state, ARGV[6 + 3 * i], ARGV[7 + 3 * i]) end
end
redis.call('HSET', meta, 'last_updated', ARGV[1])
version_bump()
touch(ARGV[2])
return 'OK'
