#!lua
-- The next generation number (KEYS[1] the counter): unique for every rebuild, above ARGV[1]
-- (the highest generation live now), so that two rebuilds, one of them a zombie past its
-- lease, never write into the same generation.
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if last < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return redis.call('INCR', KEYS[1])
