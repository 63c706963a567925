-- Operator moves of the live pointer: `rollback` to a retained earlier
-- version, or `promote` a version that was held by the user-count guard.
-- KEYS[1] target version hash, KEYS[2] live pointer hash, KEYS[3] log list
-- ARGV[1] 'rollback' | 'promote', ARGV[2] target version id, ARGV[3] now (ms),
-- ARGV[4] prefix of version hash keys
-- Returns {outcome, detail}.
-- (`newer(a, b)` is prepended from newer.lua.)
local kind, target, now = ARGV[1], ARGV[2], ARGV[3]
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'unknown', 'no such version'} end
local live = redis.call('HGET', KEYS[2], 'version')
if live == target then return {'noop', 'already live'} end
if kind == 'rollback' then
  if state ~= 'backup' and state ~= 'rolled_back' then
    return {'refused', 'version is ' .. state .. '; only retained backups can be rolled back to'}
  end
  if not live then return {'refused', 'the dataset has no live version'} end
elseif kind == 'promote' then
  if state ~= 'held' then return {'refused', 'version is ' .. state .. '; only held versions can be promoted'} end
else
  return {'refused', 'unknown move'}
end

redis.call('HSET', KEYS[2], 'version', target, 'buckets', redis.call('HGET', KEYS[1], 'buckets'),
  'since_ms', now, 'previous', live or '')
if kind == 'rollback' then
  local floor = redis.call('HGET', KEYS[2], 'floor')
  if not floor or newer(live, floor) then floor = live end
  redis.call('HSET', KEYS[2], 'rolled_back_from', live, 'rolled_back_ms', now, 'floor', floor)
  redis.call('HSET', ARGV[4] .. live, 'state', 'rolled_back', 'retired_ms', now)
else
  redis.call('HDEL', KEYS[2], 'rolled_back_from', 'rolled_back_ms')
  if live then redis.call('HSET', ARGV[4] .. live, 'state', 'backup', 'retired_ms', now) end
end
redis.call('HSET', KEYS[1], 'state', 'live', 'live_ms', now)
redis.call('HDEL', KEYS[1], 'reason')
redis.call('LPUSH', KEYS[3], cjson.encode({event = kind, version = target, previous = live or nil, at_ms = tonumber(now)}))
redis.call('LTRIM', KEYS[3], 0, 99)
return {kind == 'rollback' and 'rolled_back' or 'promoted', live or ''}
