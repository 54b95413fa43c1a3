-- renew.lua: extend the turn lock, only for its owner.
-- ARGV: token ttl_ms. Returns 1 when renewed, 0 when token does not own it.
if redis.call('GET', lock) == ARGV[1] then
  return redis.call('PEXPIRE', lock, ARGV[2])
end
return 0
