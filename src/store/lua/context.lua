-- context.lua: shared by every context script, after the KEYS names.
-- Every context script gets the same KEYS, in the order of the table in
-- store_keys.c, all in the context's one hash slot; the store prepends
-- `local meta, messages, state, idem, lock, queue, wake = KEYS[1], ...`
-- built from that table, then this file.

-- Refresh a context's expiry from its meta ttl_seconds (ttl: that field
-- when the caller has read it already). (The activity index lives in other
-- hash slots: the store updates it after the script, store_index.c.)
local function touch(now_ms, ttl)
  if ttl == nil then ttl = redis.call('HGET', meta, 'ttl_seconds') end
  ttl = tonumber(ttl or '0')
  if ttl and ttl > 0 then
    for _, k in ipairs({meta, messages, state}) do redis.call('EXPIRE', k, ttl) end
  end
end

-- A stored message's role, tokens and seq, read from the prefix
-- message_encode writes first ({"seq":N,"role":"R","tokens":T,...) without
-- decoding the message; a message in another field order (ctxd 0.4 and
-- before) is decoded. nil for what it lacks. A user message of tool results
-- ("tool_result":true next) has the role 'tool_result': it starts no unit.
local function msg_head(raw)
  local seq, role, tokens, at =
    string.match(raw, '^{"seq":(%d+),"role":"(%a+)","tokens":(%d+),()')
  if seq then
    if string.sub(raw, at, at + 18) == '"tool_result":true,' then role = 'tool_result' end
    return role, tonumber(tokens), tonumber(seq)
  end
  local ok, msg = pcall(cjson.decode, raw)
  if not ok or type(msg) ~= 'table' then return nil, nil, nil end
  return msg.role, tonumber(msg.tokens), tonumber(msg.seq)
end

-- Optimistic concurrency: the meta's version goes up with every write, and
-- is the context's ETag. A script that honours If-Match gets, as its last
-- ARGV, the versions the client accepts, space-separated ('' : any).
local function version_matches()
  local want = ARGV[#ARGV]
  if want == '' then return true end
  local v = redis.call('HGET', meta, 'version') or '1'
  for w in string.gmatch(want, '%S+') do
    if w == v then return true end
  end
  return false
end

local function version_bump()
  redis.call('HINCRBY', meta, 'version', 1)
end
