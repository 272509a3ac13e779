-- Shared by the reservation and settlement scripts (prepended to each).
-- KEYS[1] is the counter index; then six keys per claim, all under one hash tag:
--   q  requests admitted (ZSET: ticket -> ms),   t  tokens admitted (ZSET: ticket -> ms),
--   n  tokens per ticket (HASH, '#sum' = total), r  reserved nano-USD per ticket (HASH, '#total'),
--   e  reservation deadlines (ZSET: ticket -> ms), s  spend per window (HASH: window start -> nano-USD).
-- ARGV: 1 ticket, 2 tokens, 3 nano-USD, 4 reservation TTL (ms), 5 rate-key TTL (ms),
--       6 spend-key margin (ms); then six per claim: counter id, requests/min, tokens/min,
--       budget (nano-USD), window length (s), window offset (s); -1 = no such limit.
local MINUTE = 60000
local time = redis.call('TIME')
local secs = tonumber(time[1])
local now = secs * 1000 + math.floor(tonumber(time[2]) / 1000)
local ticket = ARGV[1]
local tokens = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local reservation_ttl = tonumber(ARGV[4])
local rate_ttl = tonumber(ARGV[5])
local spend_margin = tonumber(ARGV[6])
local claims = (#KEYS - 1) / 6

-- Integers as Redis reads them (Lua writes 1e+15 for large numbers).
local function int(x)
  return string.format('%.0f', x)
end

local function claim(i)
  local k, a = 1 + (i - 1) * 6, 6 + (i - 1) * 6
  return {
    q = KEYS[k + 1], t = KEYS[k + 2], n = KEYS[k + 3],
    r = KEYS[k + 4], e = KEYS[k + 5], s = KEYS[k + 6],
    id = ARGV[a + 1], rpm = tonumber(ARGV[a + 2]), tpm = tonumber(ARGV[a + 3]),
    budget = tonumber(ARGV[a + 4]), window = tonumber(ARGV[a + 5]), offset = tonumber(ARGV[a + 6]),
  }
end

-- The start of the fixed UTC window holding now, in Unix seconds.
local function window_start(c)
  return math.floor((secs - c.offset) / c.window) * c.window + c.offset
end

-- Keeps the counter in the index until its longest-lived key expires.
local function index(c, ttl)
  redis.call('ZADD', KEYS[1], 'GT', int(now + ttl), c.id)
end

local function close_index()
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now))
  local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if #top > 0 then
    redis.call('PEXPIREAT', KEYS[1], top[2])
  end
end
