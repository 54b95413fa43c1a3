-- append.lua: append messages, trim to the context's max_messages (whole
-- units), count the turn into the context's average turn_ms, store the
-- idempotency record and release the lock (waking the next waiting turn),
-- all or nothing.
-- ARGV: token expected_seq now_iso now_ms idem_key idem_record idem_ttl
--       hard_cap n prompt_sig prompt_tokens held_ms msg1 ... msgn
-- (held_ms: how long token has held the lock; 0: not counted.)
-- Returns 'OK', or 'NOT_FOUND', 'LOCK_LOST', 'CONFLICT', 'TOO_LARGE' with
-- nothing written (the lock is released when token owns it).
local function unlock()
  if redis.call('GET', lock) == ARGV[1] then
    redis.call('DEL', lock)
    queue_next(clock_ms())
  end
end
if redis.call('EXISTS', meta) == 0 then unlock() return 'NOT_FOUND' end
if redis.call('GET', lock) ~= ARGV[1] then return 'LOCK_LOST' end
local seq = tonumber(redis.call('HGET', meta, 'next_seq'))
if seq ~= tonumber(ARGV[2]) then unlock() return 'CONFLICT' end
local n = tonumber(ARGV[9])
local keep = tonumber(redis.call('HGET', meta, 'max_messages') or '0')
local cap = tonumber(ARGV[8])
if cap > 0 and keep == 0 and redis.call('LLEN', messages) + n > cap then
  unlock() return 'TOO_LARGE'
end
for i = 1, n do redis.call('RPUSH', messages, ARGV[12 + i]) end
redis.call('HSET', meta, 'next_seq', seq + n, 'last_updated', ARGV[3])
if ARGV[10] ~= '' then
  redis.call('HSET', meta, 'prompt_sig', ARGV[10], 'prompt_tokens', ARGV[11])
end
queue_count_turn(ARGV[12])
if keep > 0 and redis.call('LLEN', messages) > keep then
  -- Keep the newest keep messages, starting at a user message so the
  -- history stays whole units; with no user message among them, keep them
  -- all rather than lose the history.
  local kept = redis.call('LRANGE', messages, -keep, -1)
  local from = 1
  for i = 1, #kept do
    if msg_head(kept[i]) == 'user' then from = i break end
  end
  redis.call('LTRIM', messages, -(keep - from + 1), -1)
  local _, _, seq = msg_head(kept[from])
  if seq then redis.call('HSET', meta, 'first_seq', seq) end
end
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
touch(ARGV[4])
return 'OK'
