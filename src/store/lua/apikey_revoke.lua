-- apikey_revoke.lua: forget an API key: its record and its id. KEYS: ids.
-- ARGV: id record_prefix (a record's key is record_prefix .. sha, as
-- store_keys.c spells it; same hash slot as ids). Returns 1, or 0 when no
-- key has this id.
local sha = redis.call('HGET', KEYS[1], ARGV[1])
if not sha then return 0 end
redis.call('DEL', ARGV[2] .. sha)
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
