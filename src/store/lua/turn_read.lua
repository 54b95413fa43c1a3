-- turn_read.lua: take the turn lock and read what a turn or an append needs,
-- in one round trip.
-- ARGV: fixed fold_max token ttl_ms idem_key now_ms bytes_per_token
--       token_overhead mode queue_ttl_ms
-- An unexpired idempotency record for idem_key is returned at once, without
-- the lock (and token leaves the queue). Otherwise the lock is taken for
-- token when it is free and token is first in the queue or the queue is
-- empty; token may hold it already (a second read in the same turn: its
-- expiry starts again). Else the answer is {'BUSY', ahead, turn_ms}: how
-- many turns go before token (the holder included) and the average time a
-- stored turn held the lock lately (0: not known); with queue_ttl_ms > 0
-- token is then in the queue (or its entry renewed) for queue_ttl_ms.
-- mode 'append' reads no messages. For a turn with strategy 'all' every
-- message; otherwise the newest whole units (a user message and the replies
-- after it) whose "tokens" fit max_context_tokens minus ARGV[1] (the new
-- message), the system prompt and the summary, reading only the tail it
-- needs. With 'summarize' also up to ARGV[2] of the oldest messages that
-- left the window but are not yet in the summary. Token estimates use the
-- C estimator's constants (ARGV[7], ARGV[8]).
-- Returns nil, {'BUSY', ahead, turn_ms} or {meta-pairs, window, fold, llen,
-- window_start_seq, idempotency record or false}.
local flat = redis.call('HGETALL', meta)
if #flat == 0 then return false end
local m = {}
for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
local len = redis.call('LLEN', messages)
local first = tonumber(m.first_seq or '1')
if ARGV[5] ~= '' then
  local rec = redis.call('HGET', idem, ARGV[5])
  local exp = rec and tonumber(string.match(rec, '^(%d+) '))
  if exp and exp >= tonumber(ARGV[6]) then
    if tonumber(ARGV[10]) > 0 then queue_leave(ARGV[3], clock_ms()) end
    return {flat, {}, {}, len, first, rec}
  end
end
local holder = redis.call('GET', lock)
if holder ~= ARGV[3] then
  local now = clock_ms()
  local tokens = queue_read(now)
  if holder or (tokens[1] and tokens[1] ~= ARGV[3]) then
    if not holder then queue_wake(tokens[1]) end
    local qttl = tonumber(ARGV[10])
    local place = #tokens + 1
    if qttl > 0 then place = queue_join(ARGV[3], now, qttl, tokens) end
    local ahead = place - 1 + (holder and 1 or 0)
    return {'BUSY', ahead, tonumber(m.turn_ms or '0') or 0}
  end
  if tokens[1] then
    redis.call('LPOP', queue)
    redis.call('DEL', wake .. ':' .. ARGV[3])
  end
end
redis.call('SET', lock, ARGV[3], 'PX', ARGV[4])
local strategy = m.strategy or 'all'
if ARGV[9] == 'append' then return {flat, {}, {}, len, first, false} end
if strategy == 'all' or strategy == '' then
  return {flat, redis.call('LRANGE', messages, 0, -1), {}, len, first, false}
end
local per, overhead = tonumber(ARGV[7]), tonumber(ARGV[8])
local budget = tonumber(m.max_context_tokens or '0') - tonumber(ARGV[1])
  - math.floor(#(m.system or '') / per)
if strategy == 'summarize' then budget = budget - tonumber(m.summary_tokens or '0') end
local acc, unit, unit_tokens, total = {}, {}, 0, 0
local start, i, full = len, len - 1, false
while i >= 0 and not full do
  local lo = math.max(0, i - 63)
  local chunk = redis.call('LRANGE', messages, lo, i)
  for j = #chunk, 1, -1 do
    local raw = chunk[j]
    local role, t = msg_head(raw)
    t = t or math.floor(#raw / per) + overhead
    unit[#unit + 1] = raw
    unit_tokens = unit_tokens + t
    local idx = lo + j - 1
    if role == 'user' or idx == 0 then
      if total + unit_tokens > budget then full = true break end
      total = total + unit_tokens
      for k = 1, #unit do acc[#acc + 1] = unit[k] end
      unit, unit_tokens, start = {}, 0, idx
    end
  end
  i = lo - 1
end
local window = {}
for k = #acc, 1, -1 do window[#window + 1] = acc[k] end
local fold = {}
if strategy == 'summarize' then
  local from = math.max(0, tonumber(m.summary_upto or '0') + 1 - first)
  local to = math.min(start - 1, from + tonumber(ARGV[2]) - 1)
  if to >= from then fold = redis.call('LRANGE', messages, from, to) end
end
return {flat, window, fold, len, first + start, false}
