-- list.lua: contexts by last activity, newest first, after the cursor.
-- KEYS: index. ARGV: limit cursor_score cursor_id key_prefix meta_suffix
-- messages_suffix (a context's keys are prefix .. id .. suffix, as
-- store_keys.c spells them). Members whose context expired are dropped from
-- the index. Returns {{id, score, created_at, last_updated, llen,
-- newest message or ''}, ...}.
local index = KEYS[1]
local limit, cs, cid = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local prefix, meta_suffix, messages_suffix = ARGV[4], ARGV[5], ARGV[6]
local max = '+inf'
if cs ~= '' then max = cs end
local out, gone, offset = {}, {}, 0
while #out < limit do
  local batch = redis.call('ZREVRANGEBYSCORE', index, max, '-inf', 'WITHSCORES', 'LIMIT',
    offset, 100)
  if #batch == 0 then break end
  for i = 1, #batch, 2 do
    local id, score = batch[i], batch[i + 1]
    if not (cs ~= '' and tonumber(score) == tonumber(cs) and id >= cid) then
      local meta = prefix .. id .. meta_suffix
      if redis.call('EXISTS', meta) == 1 then
        local h = redis.call('HMGET', meta, 'created_at', 'last_updated')
        local msgs = prefix .. id .. messages_suffix
        local last = redis.call('LINDEX', msgs, -1) or ''
        out[#out + 1] = {id, score, h[1] or '', h[2] or '', redis.call('LLEN', msgs), last}
        if #out >= limit then break end
      else
        gone[#gone + 1] = id
      end
    end
  end
  offset = offset + 100
end
for i = 1, #gone do redis.call('ZREM', index, gone[i]) end
return out
