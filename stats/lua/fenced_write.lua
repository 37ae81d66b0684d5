#!lua
-- Writes of rebuild_stats and reconcile_stats --repair, fenced by their lease: each call
-- checks that the caller still holds every lock it names and does nothing at all otherwise,
-- so a rebuild or repair that lost its lock (paused past the lease, another took it) can no
-- longer change anything, however late its writes arrive.
--
-- KEYS[1..L] the locks (L = ARGV[2]); then one key per operation.
-- ARGV[1] the caller's token   ARGV[2] L
-- then per operation: its command, the number of its arguments, the arguments (after the key).
-- Every key of one call shares one hash slot (one shard; on one node any keys).
-- Besides Redis commands, ADD_PACKED <hash> <field> <orders> <gross> <refunded> adds to a
-- field of the days or hours hash ('<orders>:<gross>:<refunded>', lib/packed_figures.lua) as
-- applying rows does.
--
-- Returns 1 when every operation ran, 0 when a lock is not (or no longer) the caller's.
local allowed = {
  DEL = true, UNLINK = true, HSET = true, HINCRBY = true, ZADD = true, ZREM = true, SET = true,
}
local locks = tonumber(ARGV[2])
for i = 1, locks do
  if redis.call('GET', KEYS[i]) ~= ARGV[1] then return 0 end
end
local a = 3
for k = locks + 1, #KEYS do
  local command, n = ARGV[a], tonumber(ARGV[a + 1])
  if command == 'ADD_PACKED' then
    local field, more = ARGV[a + 2], {ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]}
    local figures = packed_figures(redis.call('HGET', KEYS[k], field))
    if not figures then
      return redis.error_reply('fenced_write: field ' .. field .. ' of ' .. KEYS[k]
        .. ' is not <orders>:<gross>:<refunded>')
    end
    redis.call('HSET', KEYS[k], field, table.concat(figures_plus(figures, more), ':'))
  elseif not allowed[command] then
    return redis.error_reply('fenced_write: ' .. command .. ' is not allowed')
  else
    redis.call(command, KEYS[k], unpack(ARGV, a + 2, a + 1 + n))
  end
  a = a + 2 + n
end
return 1
