-- Count rejected messages once each, whatever SQS redelivers (contract §3).
--
-- ARGV[1] key prefix        ARGV[2] mark TTL in seconds (0 = keep forever)
-- then 2 values per message: SQS message id, its reason codes joined by ','
--
-- A mark <prefix>:rejected:<message_id> decides, not the database: the RejectedOrder row may
-- have been committed by an attempt whose count never reached Redis, or by another consumer
-- that received the same message at the same moment. Returns how many were counted now.
local prefix = ARGV[1]
local ttl = tonumber(ARGV[2])
local ingest = prefix .. ':ingest'
local counted = 0
for i = 3, #ARGV, 2 do
  local mark = prefix .. ':rejected:' .. ARGV[i]
  local fresh
  if ttl > 0 then
    fresh = redis.call('SET', mark, '1', 'NX', 'EX', ttl)
  else
    fresh = redis.call('SET', mark, '1', 'NX')
  end
  if fresh then
    counted = counted + 1
    for code in string.gmatch(ARGV[i + 1], '[^,]+') do
      redis.call('HINCRBY', ingest, 'rejected:' .. code, 1)
    end
  end
end
if counted > 0 then redis.call('HINCRBY', ingest, 'rejected', counted) end
return counted
