-- apikey_put.lua: store an API key's record under the SHA-256 of the key,
-- and its id in the list of keys. KEYS: record, ids.
-- ARGV: id sha tenant scopes name requests_per_minute tokens_per_minute created_at.
-- Returns 1, or 0 when the id or the key is taken (nothing written).
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 or redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'tenant', ARGV[3], 'scopes', ARGV[4],
  'name', ARGV[5], 'requests_per_minute', ARGV[6], 'tokens_per_minute', ARGV[7],
  'created_at', ARGV[8])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
