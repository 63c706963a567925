-- Marks one chunk of a version done and, when it was the last one, flips the
-- dataset's live pointer to the version if it is newer than the live one.
-- Runs atomically: a reader sees the pointer before or after, never between.
-- KEYS[1] version hash, KEYS[2] done-chunks set, KEYS[3] live pointer hash
-- ARGV[1] version id, ARGV[2] chunk index, ARGV[3] users written by the chunk,
-- ARGV[4] now (ms), ARGV[5] prefix of version hash keys (same hash tag)
-- Returns {outcome, chunks done, chunks total}.

-- Byte-wise comparison: Lua's `<` on strings follows the server's locale.
local function newer(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end

local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'unknown', 0, 0} end
local total = tonumber(redis.call('HGET', KEYS[1], 'chunks'))
local chunk = tonumber(ARGV[2])
if chunk == nil or chunk < 0 or chunk >= total then return {'bad-chunk', 0, total} end
if state == 'failed' then return {'failed', 0, total} end

if redis.call('SADD', KEYS[2], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'users', ARGV[3])
end
local done = redis.call('SCARD', KEYS[2])
redis.call('HSET', KEYS[1], 'chunks_done', done)
if done < total then return {'progress', done, total} end
if state ~= 'ingesting' then return {'already', done, total} end

local live = redis.call('HGET', KEYS[3], 'version')
if live and not newer(ARGV[1], live) then
  redis.call('HSET', KEYS[1], 'state', 'superseded', 'completed_ms', ARGV[4])
  return {'superseded', done, total}
end
redis.call('HSET', KEYS[3], 'version', ARGV[1], 'buckets', redis.call('HGET', KEYS[1], 'buckets'),
  'since_ms', ARGV[4], 'previous', live or '')
redis.call('HSET', KEYS[1], 'state', 'live', 'completed_ms', ARGV[4], 'live_ms', ARGV[4])
if live then redis.call('HSET', ARGV[5] .. live, 'state', 'backup') end
return {'flipped', done, total}
