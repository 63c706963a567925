-- Applies one delta's users of one bucket to a version: each user only if
-- no newer delta wrote it (a delta as old as the last one to write the user
-- writes it again, so a delta applied twice gives the same state).
-- KEYS[1] the bucket, KEYS[2] its delta times (same slot)
-- ARGV[1] the delta's event time (ms), then pairs: user id, stored value
-- (empty: delete the user)
-- Returns {upserted, deleted}.
local t = tonumber(ARGV[1])
local upserted, deleted = 0, 0
for i = 2, #ARGV, 2 do
  local user, value = ARGV[i], ARGV[i + 1]
  local last = tonumber(redis.call('HGET', KEYS[2], user) or '-1')
  if last <= t then
    if value == '' then
      deleted = deleted + redis.call('HDEL', KEYS[1], user)
    else
      redis.call('HSET', KEYS[1], user, value)
      upserted = upserted + 1
    end
    redis.call('HSET', KEYS[2], user, ARGV[1])
  end
end
return {upserted, deleted}
