#!lua
-- Apply one shard's part of a batch atomically: valid orders, refunds and cancellations
-- (events), and counted rejects.
--
-- Every key is passed in KEYS and all of them share the shard's hash tag, so this runs on a
-- Redis Cluster (and ElastiCache Serverless) as on one node. The shebang makes Redis refuse
-- the whole script under OOM instead of stopping it between two writes.
--
-- KEYS[1] generation (string)    KEYS[2] rebuild lock (string)   KEYS[3] global (hash)
-- KEYS[4] days (hash)            KEYS[5] rank:spend (zset)        KEYS[6] rank:orders (zset)
-- KEYS[7] ingest (hash)          KEYS[8] this batch's stored reply (string)
-- KEYS[9] hours (hash)
-- then 2 keys per order: its user hash, its idempotency mark (string, in the generation)
-- then 2 keys per event: its order's user hash, its idempotency mark (string, in the generation)
-- then 1 key per rejected message: its counted-once mark (string)
-- then ARGV[10] product keys (none when no line of this call names a product): the products
--   hash, then one hash per day its products count on (pdays:<day>)
--
-- ARGV[1] the generation the caller writes to, described ('<G>;v<format>;n<shards>')
-- ARGV[2] mark TTL, seconds (0 = forever)          ARGV[3] now, epoch ms
-- ARGV[4] messages of this shard received
-- ARGV[5] oldest first-recorded time (epoch ms) an order or event without a mark may still be
--         applied at; older ones were applied long ago if ever (their mark may have expired)
--         (0 = any)
-- ARGV[6] number of orders
-- ARGV[7] how long to keep this call's reply under KEYS[8], seconds (0 = not kept)
-- ARGV[8] number of events                         ARGV[9] event messages of this shard received
-- ARGV[10] number of product keys
-- then 9 values per order: user_id, value_cents, occurred_ms, day (YYYY-MM-DD), fingerprint,
--         legacy fingerprint (what earlier versions stored in marks), first_recorded_ms
--         (0 = now), counted (1: one of the batch's messages; 0: the order of an event of the
--         batch, recorded earlier, applied here only if Redis lacks it, and counted nowhere),
--         local hour (the UTC instant it began, YYYY-MM-DDTHH:MM)
-- then 8 values per event: user_id, amount_cents, day it counts on (YYYY-MM-DD), fingerprint,
--         first_recorded_ms, cancels (1: a cancellation), counted (1: its message is the
--         batch's; 0: a waiting event attached now, its message counted when it came),
--         local hour it occurred in (as an order's)
-- then 1 value per rejected message: its reason codes joined by ','
-- then, with product keys, 1 when lines are to be summed per field first (that halves the
--   fields written, every line under 2^40, fewer than 2^11 lines) else 0, then per order and
--   then per event (in the order above): its number of products c, then c times: its day
--   hash's position among the product keys (2, 3, ...), product_id, units, cents (an
--   event's negative: what it takes off its products)
-- last: a digest of the call's items (its orders' and events' keys, in order), kept with its
--   stored reply
--
-- Orders come first, so an event's order is counted before its refund (a context order is
-- applied when its mark is absent). The days hash holds one field per day, the hours hash one
-- per local hour, each '<orders>:<gross cents>:<refunded cents>' (lib/packed_figures.lua): an
-- order applied adds 1 and its cents to the first two of its day and of its hour, an event its
-- amount to the third of the day and of the hour it occurred in (each field written once per
-- call, what the call adds to it; nothing when that is 0: a rebuild writes no such field). An
-- event adds its amount to its user's and the shard's 'refunded' too (a cancellation also 1 to
-- 'cancelled'; orders stay counted), and scores its user -(spend - refunded) in rank:spend, the
-- ranking by net spend. An order or event applied adds its products' units and cents to
-- '<product_id>:units' and '<product_id>:revenue' of the products hash and of its day's hash
-- (a refund by items and a cancellation subtract theirs); a duplicate adds nothing.
--
-- Returns {0, order statuses..., event statuses..., rejects counted} with one status per order
-- and per event: 1 applied, 0 duplicate (its mark is there), 2 conflict (its mark holds another
-- payload's fingerprint), 3 not applied because it was first recorded before the marks'
-- window. The same batch retried (a shard of it failed, or the reply was lost) with the same
-- items gets that reply again and changes nothing, so its counters count once; retried with
-- other items (its ledger step handed on more events), it runs again without counting again
-- the messages received and the duplicates.
-- Returns {1} while a rebuild holds the lock and {2, found} when the generation key does not
-- describe ARGV[1] (a rebuild switched, or another layout is live, or it is retired): nothing
-- is written then; the caller waits, or plans again, or refuses. An absent generation key is
-- claimed by a caller that expects generation 0: nothing was written for this layout yet.
-- Returns {3, 'retired:<shards>'} when an earlier version's rebuild_stats retired this lock.
-- The last ARGV is a digest of the call's items (its orders' and events' user and mark keys,
-- in order). A retry whose ledger step handed on more (a refund another consumer recorded
-- meanwhile, a waiting event whose order came) is not this reply's call: it runs again as a
-- rerun, which counts what it applies but not again the messages received and the
-- duplicates the first run counted.
local shape = ARGV[#ARGV]
local rerun = false
if tonumber(ARGV[7]) > 0 then
  local stored = redis.call('GET', KEYS[8])
  if stored then
    local kept = cjson.decode(stored)
    if kept[1] == shape then return kept[2] end
    rerun = true
  end
end
local lock = redis.call('GET', KEYS[2])
if lock then
  if string.sub(lock, 1, 8) == 'retired:' then return {3, lock} end
  return {1}
end
local generation = redis.call('GET', KEYS[1])
if not generation then
  if string.sub(ARGV[1], 1, 2) ~= '0;' then return {2, ''} end
elseif generation ~= ARGV[1] then
  return {2, generation}
end

local n = tonumber(ARGV[6])
local m = tonumber(ARGV[8])
local product_keys = tonumber(ARGV[10])
local first_event_key = 10 + 2 * n
local first_reject_key = first_event_key + 2 * m
local first_product_key = #KEYS - product_keys + 1

-- Redis does not roll a script back: check every key's type before the first write, so a
-- key of the wrong type fails the batch whole instead of leaving a mark without its totals.
local function expect(key, kind)
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= kind then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. found .. ', not a ' .. kind)
  end
end
local problem = expect(KEYS[3], 'hash') or expect(KEYS[4], 'hash') or expect(KEYS[5], 'zset')
  or expect(KEYS[6], 'zset') or expect(KEYS[7], 'hash') or expect(KEYS[9], 'hash')
if problem then return problem end
for k = 10, first_reject_key - 1, 2 do
  problem = expect(KEYS[k], 'hash') or expect(KEYS[k + 1], 'string')
  if problem then return problem end
end
for k = first_reject_key, first_product_key - 1 do
  problem = expect(KEYS[k], 'string')
  if problem then return problem end
end

for k = first_product_key, #KEYS do
  problem = expect(KEYS[k], 'hash')
  if problem then return problem end
end

local event_values = 11 + 9 * n
local codes_at = event_values + 8 * m

-- The days and hours of the call's orders and events as their hashes hold them now (one
-- field each, lib/packed_figures.lua), read before the first write for the same reason: a
-- field of another form fails the batch whole. What the rows add is summed per field and
-- written once, after them.
local function packed(key)
  return {key = key, now = {}, more = {}, touched = {}}
end
local day_fields, hour_fields = packed(KEYS[4]), packed(KEYS[9])
local function read_field(hash, field)
  if hash.now[field] then return nil end
  local value = redis.call('HGET', hash.key, field)
  hash.now[field] = packed_figures(value)
  if not hash.now[field] then
    return redis.error_reply('field ' .. field .. ' of ' .. hash.key .. ' holds ' .. value
      .. ', not <orders>:<gross>:<refunded>')
  end
end
for i = 0, n - 1 do
  problem = read_field(day_fields, ARGV[11 + 9 * i + 3])
    or read_field(hour_fields, ARGV[11 + 9 * i + 8])
  if problem then return problem end
end
for j = 0, m - 1 do
  problem = read_field(day_fields, ARGV[event_values + 8 * j + 2])
    or read_field(hour_fields, ARGV[event_values + 8 * j + 7])
  if problem then return problem end
end
local function count_in(hash, field, figures)
  local more = hash.more[field]
  if more then
    hash.more[field] = figures_plus(more, figures)
  else
    hash.more[field] = figures
    hash.touched[#hash.touched + 1] = field
  end
end

local ttl = tonumber(ARGV[2])
local oldest = tonumber(ARGV[5])
local global, rank_spend, rank_orders, ingest = KEYS[3], KEYS[5], KEYS[6], KEYS[7]

-- An order's or event's mark: its status, and the mark set when it is to be applied now.
local function claim(mark, fingerprint, legacy, first)
  local previous = redis.call('GET', mark)
  if previous then
    return (previous == fingerprint or previous == legacy) and 0 or 2
  elseif first > 0 and oldest > 0 and first < oldest then
    return 3
  end
  if ttl > 0 then
    redis.call('SET', mark, fingerprint, 'EX', ttl)
  else
    redis.call('SET', mark, fingerprint)
  end
  return 1
end

local result = {0}
local applied, duplicates = 0, 0
for i = 0, n - 1 do
  local a = 11 + 9 * i
  local user_id, cents, occurred, day = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local first, counted = tonumber(ARGV[a + 6]), ARGV[a + 7] == '1'
  local user = KEYS[10 + 2 * i]
  local status = claim(KEYS[11 + 2 * i], ARGV[a + 4], ARGV[a + 5], first)
  if status == 1 then
    local count = redis.call('HINCRBY', user, 'orders', 1)
    local spend = redis.call('HINCRBY', user, 'spend', cents)
    local refunded
    if count == 1 then
      redis.call('HSET', user, 'first', occurred, 'last', occurred)
      redis.call('HINCRBY', global, 'users', 1)
      refunded = redis.call('HGET', user, 'refunded')
    else
      local bounds = redis.call('HMGET', user, 'first', 'last', 'refunded')
      local when = tonumber(occurred)
      if when < tonumber(bounds[1]) then redis.call('HSET', user, 'first', occurred) end
      if when > tonumber(bounds[2]) then redis.call('HSET', user, 'last', occurred) end
      refunded = bounds[3]
    end
    redis.call('HINCRBY', global, 'orders', 1)
    redis.call('HINCRBY', global, 'revenue', cents)
    -- Negated scores: ZRANGE then lists the largest first and breaks ties by user_id ascending.
    -- Spend is ranked net: less what was refunded (refunded - spend, never a -0).
    redis.call('ZADD', rank_spend, (tonumber(refunded) or 0) - spend, user_id)
    redis.call('ZADD', rank_orders, -count, user_id)
    count_in(day_fields, day, {'1', cents, '0'})
    count_in(hour_fields, ARGV[a + 8], {'1', cents, '0'})
  end
  if counted then
    if status == 1 then applied = applied + 1 else duplicates = duplicates + 1 end
  end
  result[#result + 1] = status
end

local events_applied, events_duplicates = 0, 0
for j = 0, m - 1 do
  local a = event_values + 8 * j
  local user_id, cents, day, fingerprint = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local first, cancels, counted = tonumber(ARGV[a + 4]), ARGV[a + 5] == '1', ARGV[a + 6] == '1'
  local user = KEYS[first_event_key + 2 * j]
  local status = claim(KEYS[first_event_key + 2 * j + 1], fingerprint, fingerprint, first)
  if status == 1 then
    local refunded = redis.call('HINCRBY', user, 'refunded', cents)
    redis.call('HINCRBY', global, 'refunded', cents)
    count_in(day_fields, day, {'0', '0', cents})
    count_in(hour_fields, ARGV[a + 7], {'0', '0', cents})
    if cancels then
      redis.call('HINCRBY', user, 'cancelled', 1)
      redis.call('HINCRBY', global, 'cancelled', 1)
    end
    local spend = tonumber(redis.call('HGET', user, 'spend')) or 0
    redis.call('ZADD', rank_spend, refunded - spend, user_id)
    events_applied = events_applied + 1
  elseif counted then
    events_duplicates = events_duplicates + 1
  end
  result[#result + 1] = status
end

-- Each day and hour the applied orders and events count on, once (a sum of 0 writes nothing:
-- a rebuild writes no field for it either).
for _, hash in ipairs({day_fields, hour_fields}) do
  for _, field in ipairs(hash.touched) do
    local more = hash.more[field]
    if not no_figures(more) then
      redis.call('HSET', hash.key, field,
        table.concat(figures_plus(hash.now[field], more), ':'))
    end
  end
end

-- Products: each applied order's and event's lines, net (an event's values are negative).
-- When the caller found that summing halves the fields written (mode 1), the lines are
-- summed per hash and field in Lua first, then one HINCRBY per field touched (in the order
-- first touched, as HINCRBY per line created them; a sum of 0 still creates its field, as
-- HINCRBY by 0 did): a batch's lines of one product (and day) cost two HINCRBY per hash, not
-- two per line. The caller sends mode 1 only when every line is under 2^40 and there are
-- fewer than 2^11 of them, so each sum (a Lua double) is exact. Otherwise (mode 0) each line
-- is added as it comes: summing costs about what it saves when few lines share a field.
if product_keys > 0 then
  local products = KEYS[first_product_key]
  local at = codes_at + first_product_key - first_reject_key
  local merge = ARGV[at] == '1'
  at = at + 1
  local names, order, sums = {}, {}, {}
  for p = 1, product_keys do order[p], sums[p] = {}, {} end
  local function add(p, product_id, units, cents)
    local sum = sums[p][product_id]
    if sum then
      sum[1], sum[2] = sum[1] + units, sum[2] + cents
    else
      sums[p][product_id] = {units, cents}
      order[p][#order[p] + 1] = product_id
    end
  end
  for row = 1, n + m do
    local lines = tonumber(ARGV[at])
    at = at + 1
    if result[row + 1] ~= 1 then
      at = at + 4 * lines
    elseif merge then
      for _ = 1, lines do
        local product_id = ARGV[at + 1]
        local units, cents = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
        if not names[product_id] then
          names[product_id] = {product_id .. ':units', product_id .. ':revenue'}
        end
        add(1, product_id, units, cents)
        add(tonumber(ARGV[at]), product_id, units, cents)
        at = at + 4
      end
    else
      for _ = 1, lines do
        local day = KEYS[first_product_key + tonumber(ARGV[at]) - 1]
        local units, revenue = ARGV[at + 1] .. ':units', ARGV[at + 1] .. ':revenue'
        redis.call('HINCRBY', products, units, ARGV[at + 2])
        redis.call('HINCRBY', products, revenue, ARGV[at + 3])
        redis.call('HINCRBY', day, units, ARGV[at + 2])
        redis.call('HINCRBY', day, revenue, ARGV[at + 3])
        at = at + 4
      end
    end
  end
  for p = 1, product_keys do
    local key = KEYS[first_product_key + p - 1]
    for _, product_id in ipairs(order[p]) do
      local name, sum = names[product_id], sums[p][product_id]
      redis.call('HINCRBY', key, name[1], string.format('%d', sum[1]))
      redis.call('HINCRBY', key, name[2], string.format('%d', sum[2]))
    end
  end
end

-- Rejected messages are counted once each by message id, whatever SQS redelivers: the
-- database row may come from an attempt whose count never reached Redis.
local counted = 0
for k = first_reject_key, first_product_key - 1 do
  local fresh
  if ttl > 0 then
    fresh = redis.call('SET', KEYS[k], '1', 'NX', 'EX', ttl)
  else
    fresh = redis.call('SET', KEYS[k], '1', 'NX')
  end
  if fresh then
    counted = counted + 1
    for code in string.gmatch(ARGV[codes_at + k - first_reject_key], '[^,]+') do
      redis.call('HINCRBY', ingest, 'rejected:' .. code, 1)
    end
  end
end

if rerun then  -- the first run counted the messages and the duplicates it found
  duplicates, events_duplicates = 0, 0
else
  if tonumber(ARGV[4]) > 0 then redis.call('HINCRBY', ingest, 'received', ARGV[4]) end
  if tonumber(ARGV[9]) > 0 then redis.call('HINCRBY', ingest, 'events_received', ARGV[9]) end
end
if applied > 0 then redis.call('HINCRBY', ingest, 'applied', applied) end
if duplicates > 0 then redis.call('HINCRBY', ingest, 'duplicates', duplicates) end
if counted > 0 then redis.call('HINCRBY', ingest, 'rejected', counted) end
if events_applied > 0 then redis.call('HINCRBY', ingest, 'events_applied', events_applied) end
if events_duplicates > 0 then
  redis.call('HINCRBY', ingest, 'events_duplicates', events_duplicates)
end
-- A batch is also a sign of life: a busy consumer never has an empty receive to beat on.
redis.call('HSET', ingest, 'last_batch_ms', ARGV[3], 'heartbeat_ms', ARGV[3])
result[#result + 1] = counted
if not generation then redis.call('SET', KEYS[1], ARGV[1]) end
if tonumber(ARGV[7]) > 0 then
  redis.call('SET', KEYS[8], cjson.encode({shape, result}), 'EX', ARGV[7])
end
return result
