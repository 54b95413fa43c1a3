-- create.lua: a new context's meta and state. Returns 1, or 0 when the id is taken.
-- ARGV: id now_iso now_ms system model ttl strategy max_context_tokens
--       max_messages tools tool_choice n k1 v1 ... (n state pairs)
if redis.call('EXISTS', meta) == 1 then return 0 end
redis.call('HSET', meta, 'id', ARGV[1], 'created_at', ARGV[2],
  'last_updated', ARGV[2], 'system', ARGV[4], 'model', ARGV[5],
  'ttl_seconds', ARGV[6], 'strategy', ARGV[7], 'max_context_tokens', ARGV[8],
  'max_messages', ARGV[9], 'next_seq', 1, 'first_seq', 1, 'summary', '',
  'summary_upto', 0, 'summary_tokens', 0, 'version', 1,
  'tools', ARGV[10], 'tool_choice', ARGV[11])
local n = tonumber(ARGV[12])
for i = 0, n - 1 do redis.call('HSET', state, ARGV[13 + 2 * i], ARGV[14 + 2 * i]) end
touch(ARGV[3])
return 1
