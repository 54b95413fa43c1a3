-- queue.lua: the context's queue of turns waiting for its lock, shared by
-- the scripts that take, give back or wait for the lock (after context.lua).
-- queue holds "<token> <deadline_ms>" per waiting turn, first come first.
-- A waiter renews its deadline each time it looks again; an entry past its
-- deadline (Redis' clock) is a waiter that died, and is dropped. When the
-- holder is done the lock passes to the first waiter, who is woken through
-- its own list, wake .. ':' .. token, which it blocks on. The meta field turn_ms holds a
-- moving average of how long stored turns held the lock, for waiters to
-- judge their wait by.

local WAKE_TTL_MS = 10000 -- a wake nobody took (its waiter died)

-- The queue's helpers, made on demand: a script's common path (the lock
-- free, nobody waiting) never pays for making them.
local function queue_lib()
  -- Now on Redis' clock, in ms (one clock for every process).
  local function clock_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end

  -- The live waiters' tokens and entries, first come first; expired entries
  -- are dropped from the list on the way.
  local function queue_read(now)
    local all = redis.call('LRANGE', queue, 0, -1)
    local tokens, entries, last = {}, {}, 0
    for _, e in ipairs(all) do
      local t, d = string.match(e, '^(%S+) (%d+)$')
      d = tonumber(d)
      if t and d >= now then
        tokens[#tokens + 1], entries[#entries + 1] = t, e
        if d > last then last = d end
      end
    end
    if #entries < #all then
      redis.call('DEL', queue)
      for _, e in ipairs(entries) do redis.call('RPUSH', queue, e) end
      if last > 0 then redis.call('PEXPIRE', queue, last - now + 1) end
    end
    return tokens, entries
  end

  -- Tell token's waiter to look again (one pending wake is enough).
  local function queue_wake(token)
    local k = wake .. ':' .. token
    if redis.call('LLEN', k) == 0 then
      redis.call('RPUSH', k, '1')
      redis.call('PEXPIRE', k, WAKE_TTL_MS)
    end
  end

  -- The holder is done: hand the lock to the first live waiter, out of the
  -- queue (it finds the lock its own when it wakes; held until its entry's
  -- deadline, which it extends by taking it), or free it. The lock is never
  -- free while a live turn waits, so a turn that finds it free may take it
  -- without looking at the queue (store_turn.c).
  local function queue_pass(now)
    local tokens, entries = queue_read(now)
    if not tokens[1] then
      redis.call('DEL', lock)
      return
    end
    local deadline = tonumber(string.match(entries[1], ' (%d+)$'))
    redis.call('SET', lock, tokens[1], 'PX', math.max(1, deadline - now))
    redis.call('LPOP', queue)
    queue_wake(tokens[1])
  end


  -- Put token in line, or renew its entry, until now + ttl_ms; tokens and
  -- entries from queue_read. Returns its place (1: first).
  local function queue_join(token, now, ttl_ms, tokens)
    local e = token .. ' ' .. (now + ttl_ms)
    local place = #tokens + 1
    for i, t in ipairs(tokens) do
      if t == token then place = i break end
    end
    if place <= #tokens then
      redis.call('LSET', queue, place - 1, e)
    else
      redis.call('RPUSH', queue, e)
    end
    if redis.call('PTTL', queue) < ttl_ms then redis.call('PEXPIRE', queue, ttl_ms) end
    return place
  end

  -- Take token's entry out of line; tokens and entries from queue_read.
  -- Returns its place (1: first), or nil when it was not in line.
  local function queue_remove(token, tokens, entries)
    for i, t in ipairs(tokens) do
      if t == token then
        redis.call('LREM', queue, 1, entries[i])
        return i
      end
    end
    return nil
  end

  -- Take token out of line; if it was first and the lock is free, the next
  -- waiter's turn has come. A lock passed to token meanwhile is passed on.
  -- Returns 1 if it was in line (or held the lock).
  local function queue_leave(token, now)
    if redis.call('GET', lock) == token then
      queue_pass(now)
      return 1
    end
    local tokens, entries = queue_read(now)
    local place = queue_remove(token, tokens, entries)
    if not place then return 0 end
    if place == 1 and tokens[2] and not redis.call('GET', lock) then queue_wake(tokens[2]) end
    return 1
  end

  return {clock_ms = clock_ms, read = queue_read, wake = queue_wake, pass = queue_pass,
          join = queue_join, remove = queue_remove, leave = queue_leave}
end

-- Release token's lock: passed on when turns wait, else freed.
local function queue_release()
  if redis.call('EXISTS', queue) == 0 then
    redis.call('DEL', lock)
    return
  end
  local Q = queue_lib()
  Q.pass(Q.clock_ms())
end

-- The context's average turn_ms after a stored turn that held the lock
-- held_ms (0: not counted: nil), from the old average (a string, or
-- false): a fifth of the way from the old one.
local function queue_turn_avg(held_ms, old)
  local held = tonumber(held_ms) or 0
  if held <= 0 then return nil end
  local avg = tonumber(old or '')
  return avg and math.floor((avg * 4 + held) / 5 + 0.5) or held
end
