-- turn_lock.lua: take a context's turn lock for a turn or an append, or say
-- why not. The store reads the meta and the newest messages in the same
-- round trip, right after this script (plain commands, no Lua: the window is
-- worked out in C, store_window.c); they are consistent with the lock,
-- which every writer of messages holds.
-- ARGV: token ttl_ms idem_key now_ms queue_ttl_ms
-- Returns 0 when the context does not exist; {'IDEM', record} for an
-- unexpired idempotency record of idem_key (no lock is taken, and token
-- leaves the queue); 1 when token holds the lock now: it was free and token
-- first in the queue or the queue empty, or token held it already (a second
-- read in the same turn: its expiry starts again). Else {'BUSY', ahead,
-- turn_ms}: how many turns go before token (the holder included) and the
-- average time a stored turn held the lock lately (0: not known); with
-- queue_ttl_ms > 0 token is then in the queue (or its entry renewed) for
-- queue_ttl_ms.
if redis.call('EXISTS', meta) == 0 then return 0 end
local token = ARGV[1]
if ARGV[3] ~= '' then
  local rec = redis.call('HGET', idem, ARGV[3])
  local exp = rec and tonumber(string.match(rec, '^(%d+) '))
  if exp and exp >= tonumber(ARGV[4]) then
    if tonumber(ARGV[5]) > 0 and redis.call('EXISTS', queue) == 1 then
      queue_leave(token, clock_ms())
    end
    return {'IDEM', rec}
  end
end
local holder = redis.call('GET', lock)
-- A free lock with nobody waiting (the common case) needs no clock.
if holder ~= token and (holder or redis.call('EXISTS', queue) == 1) then
  local now = clock_ms()
  local tokens = queue_read(now)
  if holder or (tokens[1] and tokens[1] ~= token) then
    if not holder then queue_wake(tokens[1]) end
    local qttl = tonumber(ARGV[5])
    local place = #tokens + 1
    if qttl > 0 then place = queue_join(token, now, qttl, tokens) end
    local ahead = place - 1 + (holder and 1 or 0)
    return {'BUSY', ahead, tonumber(redis.call('HGET', meta, 'turn_ms') or '0') or 0}
  end
  if tokens[1] then
    redis.call('LPOP', queue)
    redis.call('DEL', wake .. ':' .. token)
  end
end
redis.call('SET', lock, token, 'PX', ARGV[2])
return 1
