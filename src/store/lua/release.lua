-- release.lua: drop the turn lock, only for its owner.
-- ARGV: token. Returns 1 when released, 0 when token does not own it.
if redis.call('GET', lock) == ARGV[1] then return redis.call('DEL', lock) end
return 0
