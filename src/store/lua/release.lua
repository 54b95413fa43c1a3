-- release.lua: drop the turn lock, only for its owner: it passes to the
-- next waiting turn, if any (queue.lua).
-- ARGV: token. Returns 1 when released, 0 when token does not own it.
if redis.call('GET', lock) ~= ARGV[1] then return 0 end
queue_release()
return 1
