-- turn_lock.lua: take a context's turn lock for a turn or an append, or say
-- why not. The store first tries SET NX on the lock without a script (the
-- lock is never free while a live turn waits: queue.lua's pass); this is for when
-- that fails. The store reads the meta and the newest messages in the same
-- round trip either way, right after (plain commands, no Lua: the window is
-- worked out in C, store_window.c); they are consistent with the lock,
-- which every writer of messages holds.
-- ARGV: token ttl_ms idem_key now_ms queue_ttl_ms
-- Returns 0 when the context does not exist; {'IDEM', record} for an
-- unexpired idempotency record of idem_key (no lock is taken: token leaves
-- the queue, and passes on a lock passed to it); 1 when token holds the lock now: it was free and token
-- first in the queue or the queue empty, or token held it already (a second
-- read in the same turn: its expiry starts again). Else {'BUSY', ahead,
-- turn_ms}: how many turns go before token (the holder included) and the
-- average time a stored turn held the lock lately (0: not known); with
-- queue_ttl_ms > 0 token is then in the queue (or its entry renewed) for
-- queue_ttl_ms.
if redis.call('EXISTS', meta) == 0 then return 0 end
local token = ARGV[1]
local Q = queue_lib()
if ARGV[3] ~= '' then
  local rec = redis.call('HGET', idem, ARGV[3])
  local exp = rec and tonumber(string.match(rec, '^(%d+) '))
  if exp and exp >= tonumber(ARGV[4]) then
    -- Out of the queue, and the lock passed on if it was passed to token.
    if redis.call('EXISTS', queue) == 1 or redis.call('GET', lock) == token then
      Q.leave(token, Q.clock_ms())
    end
    return {'IDEM', rec}
  end
end
-- A free lock with nobody waiting (the common case): take it, no clock.
if redis.call('EXISTS', queue) == 0 and
    redis.call('SET', lock, token, 'NX', 'PX', ARGV[2]) then
  return 1
end
local holder = redis.call('GET', lock)
if holder == token then
  -- Passed to token (out of line already), a second read in its turn, or
  -- taken with SET NX while entries were left in line (after a holder's
  -- lock expired): then token's own entry goes.
  if redis.call('EXISTS', queue) == 1 then
    local tokens, entries = Q.read(Q.clock_ms())
    Q.remove(token, tokens, entries)
  end
  redis.call('DEL', wake .. ':' .. token)
else
  local now = Q.clock_ms()
  local tokens = Q.read(now)
  if holder or (tokens[1] and tokens[1] ~= token) then
    if not holder then Q.wake(tokens[1]) end
    local qttl = tonumber(ARGV[5])
    local place = #tokens + 1
    if qttl > 0 then place = Q.join(token, now, qttl, tokens) end
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
