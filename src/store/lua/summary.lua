-- summary.lua: store a folded summary unless someone else moved it meanwhile.
-- ARGV: expected_upto new_upto text tokens now_iso.
-- Returns 'OK', 'NOT_FOUND' or 'CONFLICT'.
if redis.call('EXISTS', meta) == 0 then return 'NOT_FOUND' end
if redis.call('HGET', meta, 'summary_upto') ~= ARGV[1] then return 'CONFLICT' end
redis.call('HSET', meta, 'summary_upto', ARGV[2], 'summary', ARGV[3],
  'summary_tokens', ARGV[4], 'summary_updated_at', ARGV[5])
version_bump()
return 'OK'
