-- Shared by apply_batch.lua and fenced_write.lua (stats/store/scripts.py inserts it after
-- their first line): a day of the days hash is one field, '<orders>:<gross>:<refunded>', three
-- integers written out in full. Lua's numbers are doubles, exact below 2^53 only, and Redis
-- kept these figures as 64-bit integers (HINCRBY): each is added as two parts, above and below
-- 10^9, each exact, so a sum stays exact far past 2^63.
local BILLION = 1000000000

local function day_parts(text)
  local sign, digits = 1, text
  if string.sub(text, 1, 1) == '-' then sign, digits = -1, string.sub(text, 2) end
  local cut = #digits - 9
  local high = cut > 0 and tonumber(string.sub(digits, 1, cut)) or 0
  return sign * high, sign * tonumber(string.sub(digits, math.max(cut + 1, 1)))
end

-- The exact sum of two integers written out as text ('-' for a negative one), as text.
local function day_plus(a, b)
  local ah, al = day_parts(a)
  local bh, bl = day_parts(b)
  local high, low = ah + bh, al + bl
  if low >= BILLION then
    high, low = high + 1, low - BILLION
  elseif low <= -BILLION then
    high, low = high - 1, low + BILLION
  end
  if high > 0 and low < 0 then
    high, low = high - 1, low + BILLION
  elseif high < 0 and low > 0 then
    high, low = high + 1, low - BILLION
  end
  if high == 0 then return string.format('%d', low) end
  return string.format('%d%09d', high, math.abs(low))
end

-- A day field's value as its three figures (text), {'0', '0', '0'} when absent (false, nil);
-- nil when it holds anything else.
local function day_figures(value)
  if not value then return {'0', '0', '0'} end
  local orders, gross, refunded = string.match(value, '^(%-?%d+):(%-?%d+):(%-?%d+)$')
  if not orders then return nil end
  return {orders, gross, refunded}
end

-- The value holding ``figures`` plus ``more`` (three figures each, text).
local function day_value(figures, more)
  return day_plus(figures[1], more[1]) .. ':' .. day_plus(figures[2], more[2]) .. ':'
    .. day_plus(figures[3], more[3])
end
