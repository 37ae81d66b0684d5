#!lua
-- Release the rebuild lock of one shard only if this rebuild still holds it (KEYS[1] the
-- lock, ARGV[1] the rebuild's token): a rebuild that outlived its lock must not free another's.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
