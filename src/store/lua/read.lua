-- read.lua: a page of history older than a seq, with the meta and state.
-- ARGV: what limit before (what: 1 messages, 2 state, 3 both).
-- Returns nil when there is no context, else {meta-pairs, messages,
-- state-pairs, llen, start} where start is the list index of the first
-- message returned (0: nothing older is left).
local flat = redis.call('HGETALL', meta)
if #flat == 0 then return false end
local what = tonumber(ARGV[1])
local len = redis.call('LLEN', messages)
local msgs, start = {}, 0
if what % 2 == 1 and len > 0 then
  local first = 1
  for i = 1, #flat, 2 do
    if flat[i] == 'first_seq' then first = tonumber(flat[i + 1]) end
  end
  local last = len - 1
  local before = tonumber(ARGV[3])
  if before > 0 then last = math.min(last, before - first - 1) end
  local limit = tonumber(ARGV[2])
  if limit > 0 then start = math.max(0, last - limit + 1) end
  if last >= start then msgs = redis.call('LRANGE', messages, start, last) end
end
local st = {}
if what >= 2 then st = redis.call('HGETALL', state) end
return {flat, msgs, st, len, start}
