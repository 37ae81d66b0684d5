-- Apply one batch of validated orders atomically (contract §3).
--
-- ARGV[1] key prefix        ARGV[2] idempotency TTL in seconds (0 = keep forever)
-- ARGV[3] now, epoch ms     ARGV[4] messages received in this batch (ingestion counter)
-- ARGV[5] consumer id (host:pid; empty = none), whose heartbeat this batch also is
-- then 6 values per order:  order_id, user_id, value_cents, occurred_ms, day (YYYY-MM-DD), fingerprint
--
-- Returns one status per order: 1 applied, 0 duplicate (same fingerprint already applied),
-- 2 conflict (the order_id was applied with a different fingerprint; nothing changed).
--
-- Keys are derived from the prefix inside the script: orderpipe runs against one Redis
-- node (not Cluster), and one script per batch is what makes a batch atomic.
local prefix = ARGV[1]
local ttl = tonumber(ARGV[2])
local global = prefix .. ':global'
local days = prefix .. ':days'
local rank_spend = prefix .. ':rank:spend'
local rank_orders = prefix .. ':rank:orders'
local ingest = prefix .. ':ingest'

local statuses = {}
local applied, duplicates, conflicts = 0, 0, 0
for i = 6, #ARGV, 6 do
  local order_id, user_id, cents = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local occurred, day, fingerprint = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local mark = prefix .. ':seen:' .. order_id
  -- SET NX GET: sets the mark when absent (returns nil) or returns the existing fingerprint.
  local previous
  if ttl > 0 then
    previous = redis.call('SET', mark, fingerprint, 'NX', 'GET', 'EX', ttl)
  else
    previous = redis.call('SET', mark, fingerprint, 'NX', 'GET')
  end
  if not previous then
    local user = prefix .. ':user:' .. user_id
    local count = redis.call('HINCRBY', user, 'orders', 1)
    local spend = redis.call('HINCRBY', user, 'spend', cents)
    if count == 1 then
      redis.call('HSET', user, 'first', occurred, 'last', occurred)
      redis.call('HINCRBY', global, 'users', 1)
    else
      local bounds = redis.call('HMGET', user, 'first', 'last')
      local when = tonumber(occurred)
      if when < tonumber(bounds[1]) then redis.call('HSET', user, 'first', occurred) end
      if when > tonumber(bounds[2]) then redis.call('HSET', user, 'last', occurred) end
    end
    redis.call('HINCRBY', global, 'orders', 1)
    redis.call('HINCRBY', global, 'revenue', cents)
    -- Negated scores: ZRANGE then lists the largest first and breaks ties by user_id ascending.
    redis.call('ZADD', rank_spend, -spend, user_id)
    redis.call('ZADD', rank_orders, -count, user_id)
    redis.call('HINCRBY', days, day .. ':orders', 1)
    redis.call('HINCRBY', days, day .. ':revenue', cents)
    applied = applied + 1
    statuses[#statuses + 1] = 1
  elseif previous == fingerprint then
    duplicates = duplicates + 1
    statuses[#statuses + 1] = 0
  else
    conflicts = conflicts + 1
    statuses[#statuses + 1] = 2
  end
end

redis.call('HINCRBY', ingest, 'received', ARGV[4])
redis.call('HINCRBY', ingest, 'applied', applied)
redis.call('HINCRBY', ingest, 'duplicates', duplicates)
-- A batch is also a sign of life: a busy consumer never has an empty receive to beat on.
redis.call('HSET', ingest, 'last_batch_ms', ARGV[3], 'heartbeat_ms', ARGV[3])
if ARGV[5] ~= '' then redis.call('HSET', prefix .. ':consumers', ARGV[5], ARGV[3]) end
return statuses
