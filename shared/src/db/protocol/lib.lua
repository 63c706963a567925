-- Helpers prepended to every script of the protocol.

-- Byte-wise comparison of version ids: Lua's `<` on strings follows the
-- server's locale.
local function newer(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end

-- The server's clock in ms: every time the protocol records or compares comes
-- from Redis, never from a caller whose clock may be off.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The first delta of the log `deltas` newer than `after_ms` that is not in the
-- set `replayed` (the deltas a version got), or nil: a version may go live
-- only when every delta newer than its batch is in it.
local function unreplayed(deltas, replayed, after_ms)
  for _, delta in ipairs(redis.call('ZRANGEBYSCORE', deltas, '(' .. after_ms, '+inf')) do
    if redis.call('SISMEMBER', replayed, delta) == 0 then return delta end
  end
  return nil
end

-- Appends an entry to the dataset's log (newest first, bounded).
local function log_to(key, entry)
  redis.call('LPUSH', key, cjson.encode(entry))
  redis.call('LTRIM', key, 0, 99)
end

