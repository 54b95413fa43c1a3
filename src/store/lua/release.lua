-- release.lua: drop the turn lock, only for its owner, and wake the next
-- waiting turn.
-- ARGV: token. Returns 1 when released, 0 when token does not own it.
if redis.call('GET', lock) ~= ARGV[1] then return 0 end
redis.call('DEL', lock)
queue_next(clock_ms())
return 1
