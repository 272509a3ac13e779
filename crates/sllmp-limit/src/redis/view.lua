-- One counter's state now, without changing it (for GET /v1/limits).
-- KEYS: q t n r e s of one counter. ARGV: window length (s), window offset (s); -1: no budget.
-- Returns {now ms, requests, newest request ms, tokens, newest token ms, reserved, spent,
-- window end (s)}; -1 for what is absent.
local MINUTE = 60000
local time = redis.call('TIME')
local secs = tonumber(time[1])
local now = secs * 1000 + math.floor(tonumber(time[2]) / 1000)
local from = '(' .. string.format('%.0f', now - MINUTE)

local function newest(key)
  local top = redis.call('ZREVRANGEBYSCORE', key, '+inf', from, 'WITHSCORES', 'LIMIT', 0, 1)
  if #top == 0 then
    return -1
  end
  return tonumber(top[2])
end

local function sum(zset, hash, min)
  local total = 0
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', zset, min, '+inf')) do
    total = total + tonumber(redis.call('HGET', hash, member) or '0')
  end
  return total
end

local requests = redis.call('ZCOUNT', KEYS[1], from, '+inf')
local tokens = sum(KEYS[2], KEYS[3], from)
local reserved = sum(KEYS[5], KEYS[4], '(' .. string.format('%.0f', now))
local window, offset = tonumber(ARGV[1]), tonumber(ARGV[2])
local spent, window_end = -1, -1
if window > 0 then
  local start = math.floor((secs - offset) / window) * window + offset
  spent = tonumber(redis.call('HGET', KEYS[6], string.format('%.0f', start)) or '0')
  window_end = start + window
end
return {now, requests, newest(KEYS[1]), tokens, newest(KEYS[2]), reserved, spent, window_end}
