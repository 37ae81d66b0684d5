-- Shared by apply_batch.lua and fenced_write.lua (stats/store/scripts.py inserts it after
-- their first line): a day of the days hash and an hour of the hours hash are one field each,
-- '<orders>:<gross>:<refunded>', integers written out in full. Lua's numbers are doubles,
-- exact below 2^53 only, and Redis kept these figures as 64-bit integers (HINCRBY): beyond
-- 10^15 each is added as two parts, above and below 10^9, each exact, so a sum stays exact far
-- past 2^63.
local BILLION = 1000000000
local FIGURES = '^(%-?%d+):(%-?%d+):(%-?%d+)$'

local function figure_parts(text)
  local sign, digits = 1, text
  if string.sub(text, 1, 1) == '-' then sign, digits = -1, string.sub(text, 2) end
  local cut = #digits - 9
  local high = cut > 0 and tonumber(string.sub(digits, 1, cut)) or 0
  return sign * high, sign * tonumber(string.sub(digits, math.max(cut + 1, 1)))
end

-- The exact sum of two integers written out as text ('-' for a negative one), as text: in one
-- double while both are shorter than 16 characters (below 10^15, the sum below 2^53).
local function figure_plus(a, b)
  if b == '0' then return a end
  if a == '0' then return b end
  if #a < 16 and #b < 16 then return string.format('%d', tonumber(a) + tonumber(b)) end
  local ah, al = figure_parts(a)
  local bh, bl = figure_parts(b)
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

-- A packed field's value as its three figures (text), zeros when absent (false, nil); nil
-- when it holds anything else.
local function packed_figures(value)
  if not value then return {'0', '0', '0'} end
  local found = {string.match(value, FIGURES)}
  if #found ~= 3 then return nil end
  return found
end

-- The sums of two lists of figures (text), each figure exactly.
local function figures_plus(figures, more)
  local sums = {}
  for i = 1, #figures do sums[i] = figure_plus(figures[i], more[i]) end
  return sums
end

-- Whether every figure is 0 (what adds nothing).
local function no_figures(figures)
  for i = 1, #figures do
    if figures[i] ~= '0' then return false end
  end
  return true
end
