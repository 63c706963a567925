-- Applies one delta's users of one bucket to a version: each user only if
-- no later delta wrote it. Deltas are ordered by event time, then by id (two
-- uploads in one millisecond); the delta that last wrote a user writes it
-- again, so a delta applied twice gives the same state.
-- KEYS[1] the bucket, KEYS[2] its delta times (same slot): user → `<ms> <id>`
-- ARGV[1] the delta's event time (ms), ARGV[2] its id, then pairs: user id,
-- stored value (empty: delete the user)
-- Returns {upserted, deleted}.
-- (`newer`, a byte-wise comparison, is prepended from protocol/lib.lua.)
local t, id = tonumber(ARGV[1]), ARGV[2]
local stamp = ARGV[1] .. ' ' .. id

local upserted, deleted = 0, 0
for i = 3, #ARGV, 2 do
  local user, value = ARGV[i], ARGV[i + 1]
  local last = redis.call('HGET', KEYS[2], user)
  local later = false
  if last then
    local last_t, last_id = string.match(last, '^(%d+) (.*)$')
    last_t = tonumber(last_t)
    later = last_t > t or (last_t == t and newer(last_id, id))
  end
  if not later then
    if value == '' then
      deleted = deleted + redis.call('HDEL', KEYS[1], user)
    else
      redis.call('HSET', KEYS[1], user, value)
      upserted = upserted + 1
    end
    redis.call('HSET', KEYS[2], user, stamp)
  end
end
return {upserted, deleted}
