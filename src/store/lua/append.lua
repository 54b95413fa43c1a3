-- append.lua: append messages, trim to the context's max_messages (whole
-- units), count the turn into the context's average turn_ms, store the
-- idempotency record and release the lock (passing it to the next waiting
-- turn), all or nothing.
-- ARGV: token expected_seq now_iso now_ms idem_key idem_record idem_ttl
--       hard_cap n prompt_sig prompt_tokens held_ms msg1 ... msgn if_match
-- (held_ms: how long token has held the lock; 0: not counted; if_match:
-- see context.lua.)
-- Returns 'OK', or 'NOT_FOUND', 'LOCK_LOST', 'CONFLICT', 'PRECONDITION',
-- 'TOO_LARGE' with nothing written (the lock is released when token owns
-- it).
local f = redis.call('HMGET', meta, 'next_seq', 'max_messages', 'turn_ms', 'ttl_seconds',
  'version')
local holder = redis.call('GET', lock)
local function unlock()
  if holder == ARGV[1] then queue_release() end
end
if not f[1] and redis.call('EXISTS', meta) == 0 then unlock() return 'NOT_FOUND' end
if holder ~= ARGV[1] then return 'LOCK_LOST' end
local seq = tonumber(f[1])
if seq ~= tonumber(ARGV[2]) then unlock() return 'CONFLICT' end
if ARGV[#ARGV] ~= '' and not version_matches() then unlock() return 'PRECONDITION' end
local n = tonumber(ARGV[9])
local keep = tonumber(f[2] or '0')
local cap = tonumber(ARGV[8])
if cap > 0 and keep == 0 and redis.call('LLEN', messages) + n > cap then
  unlock() return 'TOO_LARGE'
end
local len = 0
for i = 1, n, 256 do -- one RPUSH per 256 messages (unpack's stack is bounded)
  len = redis.call('RPUSH', messages, unpack(ARGV, 12 + i, 12 + math.min(n, i + 255)))
end
local fields = {'next_seq', seq + n, 'last_updated', ARGV[3],
  'version', (tonumber(f[5]) or 1) + 1}
if ARGV[10] ~= '' then
  fields[#fields + 1], fields[#fields + 2] = 'prompt_sig', ARGV[10]
  fields[#fields + 1], fields[#fields + 2] = 'prompt_tokens', ARGV[11]
end
local avg = queue_turn_avg(ARGV[12], f[3])
if avg then fields[#fields + 1], fields[#fields + 2] = 'turn_ms', avg end
if keep > 0 and len > keep then
  -- Keep the newest keep messages, starting at a user message so the
  -- history stays whole units; with no user message among them, keep them
  -- all rather than lose the history. Usually the first kept one is a user
  -- message (turns are pairs): one message read.
  local from_msg = redis.call('LINDEX', messages, -keep)
  local from = 1
  if msg_head(from_msg) ~= 'user' then
    local kept = redis.call('LRANGE', messages, -keep, -1)
    for i = 1, #kept do
      if msg_head(kept[i]) == 'user' then from = i break end
    end
    from_msg = kept[from]
  end
  redis.call('LTRIM', messages, -(keep - from + 1), -1)
  local _, _, first = msg_head(from_msg)
  if first then fields[#fields + 1], fields[#fields + 2] = 'first_seq', first end
end
redis.call('HSET', meta, unpack(fields))
if ARGV[5] ~= '' then
  if redis.call('HLEN', idem) >= 1024 then
    local all = redis.call('HGETALL', idem)
    local now = tonumber(ARGV[4])
    for i = 1, #all, 2 do
      local exp = tonumber(string.match(all[i + 1], '^(%d+) '))
      if not exp or exp < now then redis.call('HDEL', idem, all[i]) end
    end
  end
  redis.call('HSET', idem, ARGV[5], ARGV[6])
  redis.call('EXPIRE', idem, ARGV[7])
end
unlock()
touch(ARGV[4], f[4])
return 'OK'
