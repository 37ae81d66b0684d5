#!lua
-- Extend a rebuild's lease on one shard only if the rebuild still holds it (KEYS[1] the lock,
-- ARGV[1] the token, ARGV[2] the lease in ms): 1 when extended, 0 when it was lost.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
