-- Deletes every counter of one constraint. KEYS[1]: the counter index.
-- ARGV: the hash-tagged prefix, then the two ways a counter id of the constraint starts
-- ('["name",' and '["name"]'). Returns how many counters there were.
local count = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if id:sub(1, #ARGV[2]) == ARGV[2] or id == ARGV[3] then
    for _, kind in ipairs({'q:', 't:', 'n:', 'r:', 'e:', 's:'}) do
      redis.call('DEL', ARGV[1] .. kind .. id)
    end
    redis.call('ZREM', KEYS[1], id)
    count = count + 1
  end
end
return count
