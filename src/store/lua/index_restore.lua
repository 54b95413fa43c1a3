-- index_restore.lua: an append that was refused had already moved its
-- context in the activity index (the ZADD travels in the append's round
-- trip, store_turn.c): put it back where its last write left it, unless
-- something else moved it since. KEYS: the index bucket.
-- ARGV: id ours_ms prev_ms. Returns 1 when put back, else 0.
if redis.call('ZSCORE', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
