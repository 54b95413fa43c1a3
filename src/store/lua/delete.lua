-- delete.lua: every key of a context (the store takes it out of the
-- activity index, store_index.c). ARGV: id. Returns 1 if the context existed, else 0.
local e = redis.call('EXISTS', meta)
redis.call('DEL', meta, messages, state, idem, lock, queue)
return e
