-- apikey_list.lua: every API key's record. KEYS: ids. ARGV: record_prefix.
-- Returns {{sha, field, value, ...}, ...}; ids whose record is gone are dropped.
local out = {}
local ids = redis.call('HGETALL', KEYS[1])
for i = 1, #ids, 2 do
  local rec = redis.call('HGETALL', ARGV[1] .. ids[i + 1])
  if #rec == 0 then
    redis.call('HDEL', KEYS[1], ids[i])
  else
    table.insert(rec, 1, ids[i + 1])
    out[#out + 1] = rec
  end
end
return out
