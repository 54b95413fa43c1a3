-- delete.lua: every key of a context, and its place in the activity index.
-- ARGV: id. Returns 1 if the context existed, else 0.
local e = redis.call('EXISTS', meta)
redis.call('DEL', meta, messages, state, idem, lock, queue)
redis.call('ZREM', index, ARGV[1])
return e
