-- context.lua: shared by every context script, after the KEYS names.
-- Every context script gets the same KEYS, in the order of the table in
-- store_keys.c, all in the context's one hash slot; the store prepends
-- `local meta, messages, state, idem, lock, queue, wake = KEYS[1], ...`
-- built from that table, then this file.

-- Refresh a context's expiry from its meta ttl_seconds. (The activity
-- index lives in other hash slots: the store updates it after the script,
-- store_index.c.)
local function touch(now_ms)
  local ttl = tonumber(redis.call('HGET', meta, 'ttl_seconds') or '0')
  if ttl and ttl > 0 then
    for _, k in ipairs({meta, messages, state}) do redis.call('EXPIRE', k, ttl) end
  end
end
