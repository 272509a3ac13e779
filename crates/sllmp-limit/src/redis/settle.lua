-- Settles a ticket: its tokens become the actual tokens (while still in the minute), its
-- reservations are dropped and the actual nano-USD is added to the current window's spend.
for i = 1, claims do
  local c = claim(i)
  if c.tpm >= 0 and redis.call('ZSCORE', c.t, ticket) then
    local old = tonumber(redis.call('HGET', c.n, ticket) or '0')
    redis.call('HSET', c.n, ticket, int(tokens))
    redis.call('HINCRBY', c.n, '#sum', int(tokens - old))
  end
  if c.budget >= 0 then
    local reserved = redis.call('HGET', c.r, ticket)
    if reserved then
      redis.call('HDEL', c.r, ticket)
      redis.call('HINCRBY', c.r, '#total', int(-tonumber(reserved)))
      redis.call('ZREM', c.e, ticket)
    end
    local start = int(window_start(c))
    -- Spend of past windows is never read again.
    for _, field in ipairs(redis.call('HKEYS', c.s)) do
      if field ~= start then
        redis.call('HDEL', c.s, field)
      end
    end
    redis.call('HINCRBY', c.s, start, int(cost))
    local ttl = (tonumber(start) + c.window - secs) * 1000 + spend_margin
    redis.call('PEXPIRE', c.s, int(ttl))
    index(c, ttl)
  end
end
close_index()
return 1
