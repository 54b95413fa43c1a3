-- rate.lua: one limit of one API key, GCRA: the key holds the theoretical
-- arrival time (ms) of the next unit; limit units per period, in bursts of
-- up to the whole limit. KEYS: the limit's key.
-- ARGV: period_ms limit cost mode (the time is Redis's own, the same for
-- every ctxd process), mode one of
--   take    use cost units if they fit, else refuse and change nothing
--   peek    allowed while any room is left (a turn before its tokens are known)
--   charge  use cost units whether they fit or not (tokens a reply used)
-- Returns {allowed (1/0), remaining units, ms until the whole limit is back,
-- ms to wait before a retry (0 when allowed)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period, limit, cost, mode = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local interval = period / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat, allowed, retry = tat, 1, 0
if mode == 'take' then
  new_tat = tat + cost * interval
  if new_tat - now > period then allowed, retry, new_tat = 0, new_tat - now - period, tat end
elseif mode == 'peek' then
  if tat - now >= period then allowed, retry = 0, tat - now - period + interval end
else
  new_tat = tat + cost * interval
end
if mode ~= 'peek' and new_tat > now then
  redis.call('SET', KEYS[1], string.format('%d', math.ceil(new_tat)),
    'PX', math.ceil(new_tat - now) + 1000)
end
local remaining = math.floor((period - (new_tat - now)) / interval)
if remaining < 0 then remaining = 0 end
return {allowed, remaining, math.ceil(new_tat - now), math.ceil(retry)}
