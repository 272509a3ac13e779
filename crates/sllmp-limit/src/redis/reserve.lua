-- Reserves one request, the tokens and the nano-USD on every claim, or on none.
-- Returns {0, claim, kind (1 requests, 2 tokens, 3 budget), usage, limit, asked, retry ms}
-- for the first refusing claim, else {1, then per claim: requests left, tokens left (-1: no limit)}.

-- Drops the token entries older than a minute; the tokens counted now.
local function live_tokens(c)
  local cut = int(now - MINUTE)
  local old = redis.call('ZRANGEBYSCORE', c.t, '-inf', cut)
  if #old > 0 then
    local gone = 0
    for _, member in ipairs(old) do
      gone = gone + tonumber(redis.call('HGET', c.n, member) or '0')
      redis.call('HDEL', c.n, member)
    end
    redis.call('ZREMRANGEBYSCORE', c.t, '-inf', cut)
    redis.call('HINCRBY', c.n, '#sum', int(-gone))
  end
  return tonumber(redis.call('HGET', c.n, '#sum') or '0')
end

-- Drops the reservations past their deadline (a replica that died); the nano-USD reserved now.
local function live_reserved(c)
  local old = redis.call('ZRANGEBYSCORE', c.e, '-inf', int(now))
  if #old > 0 then
    local gone = 0
    for _, member in ipairs(old) do
      gone = gone + tonumber(redis.call('HGET', c.r, member) or '0')
      redis.call('HDEL', c.r, member)
    end
    redis.call('ZREMRANGEBYSCORE', c.e, '-inf', int(now))
    redis.call('HINCRBY', c.r, '#total', int(-gone))
  end
  return tonumber(redis.call('HGET', c.r, '#total') or '0')
end

-- Check every claim first: a ticket refused by one counter consumes nothing.
for i = 1, claims do
  local c = claim(i)
  if c.rpm >= 0 then
    redis.call('ZREMRANGEBYSCORE', c.q, '-inf', int(now - MINUTE))
    local used = redis.call('ZCARD', c.q)
    if used + 1 > c.rpm then
      local retry = MINUTE
      local oldest = redis.call('ZRANGE', c.q, 0, 0, 'WITHSCORES')
      if #oldest > 0 then
        retry = math.max(0, tonumber(oldest[2]) + MINUTE - now)
      end
      return {0, i, 1, used, c.rpm, 1, retry}
    end
  end
  if c.tpm >= 0 then
    local sum = live_tokens(c)
    if sum + tokens > c.tpm then
      local retry = MINUTE
      if tokens <= c.tpm then
        local entries = redis.call('ZRANGE', c.t, 0, -1, 'WITHSCORES')
        local left = sum
        for j = 1, #entries, 2 do
          left = left - tonumber(redis.call('HGET', c.n, entries[j]) or '0')
          if left + tokens <= c.tpm then
            retry = math.max(0, tonumber(entries[j + 1]) + MINUTE - now)
            break
          end
        end
      end
      return {0, i, 2, sum, c.tpm, tokens, retry}
    end
  end
  if c.budget >= 0 then
    local start = window_start(c)
    local used = live_reserved(c) + tonumber(redis.call('HGET', c.s, int(start)) or '0')
    if used + cost > c.budget then
      local retry = math.max(1, start + c.window - secs) * 1000
      return {0, i, 3, used, c.budget, cost, retry}
    end
  end
end

local out = {1}
for i = 1, claims do
  local c = claim(i)
  local requests_left, tokens_left, ttl = -1, -1, rate_ttl
  if c.rpm >= 0 then
    redis.call('ZADD', c.q, int(now), ticket)
    redis.call('PEXPIRE', c.q, rate_ttl)
    requests_left = c.rpm - redis.call('ZCARD', c.q)
  end
  if c.tpm >= 0 then
    redis.call('ZADD', c.t, int(now), ticket)
    redis.call('HSET', c.n, ticket, int(tokens))
    local sum = redis.call('HINCRBY', c.n, '#sum', int(tokens))
    redis.call('PEXPIRE', c.t, rate_ttl)
    redis.call('PEXPIRE', c.n, rate_ttl)
    tokens_left = c.tpm - sum
  end
  if c.budget >= 0 then
    redis.call('HSET', c.r, ticket, int(cost))
    redis.call('HINCRBY', c.r, '#total', int(cost))
    redis.call('ZADD', c.e, int(now + reservation_ttl), ticket)
    redis.call('PEXPIRE', c.r, reservation_ttl)
    redis.call('PEXPIRE', c.e, reservation_ttl)
    ttl = math.max(ttl, reservation_ttl)
  end
  index(c, ttl)
  out[#out + 1] = requests_left
  out[#out + 1] = tokens_left
end
close_index()
return out
