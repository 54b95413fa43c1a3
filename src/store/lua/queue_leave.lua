-- queue_leave.lua: a waiting turn gives up (its wait is over); if it was
-- first in line and the lock is free, the next waiter is woken.
-- ARGV: token. Returns 1 if token was in the queue, else 0.
local Q = queue_lib()
return Q.leave(ARGV[1], Q.clock_ms())
