-- Operator moves of the live pointer.
--   rollback: back to a retained backup older than the live version. The
--     version it leaves becomes `rolled_back` and the floor rises to it, so no
--     version up to it goes live by itself again.
--   promote: forward to a version the user-count guard held. Putting a
--     version live behind a newer live one, below the floor, or one that was
--     not held (a backup, a superseded version) needs `force`; a forced move
--     backwards leaves the floor where a rollback would.
-- Only a complete version whose data is retained can be the target, and only
-- once every delta newer than its batch is in it ({'replay', delta} if not:
-- the caller replays them and moves again).
-- KEYS[1] target version hash, KEYS[2] live pointer hash, KEYS[3] log list,
-- KEYS[4] delta log, KEYS[5] deltas the target got
-- ARGV[1] 'rollback' | 'promote', ARGV[2] target version id, ARGV[3] prefix of
-- version hash keys, ARGV[4] '1' when forced, ARGV[5] the target's event time (ms)
-- Returns {outcome, detail}.
-- (`newer`, `now_ms`, `unreplayed` and `log_to` are prepended from lib.lua.)
local kind, target, forced = ARGV[1], ARGV[2], ARGV[4] == '1'
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'unknown', 'no such version'} end
local live = redis.call('HGET', KEYS[2], 'version')
if live == target then return {'noop', 'already live'} end
local floor = redis.call('HGET', KEYS[2], 'floor')

local complete = redis.call('HGET', KEYS[1], 'chunks_done') == redis.call('HGET', KEYS[1], 'chunks')
  and redis.call('HEXISTS', KEYS[1], 'data_deleted') == 0 and redis.call('HGET', KEYS[1], 'unwritten') ~= '1'
local retained = state == 'backup' or state == 'rolled_back' or state == 'superseded' or state == 'held'
if not (complete and retained) then
  return {'refused', 'version is ' .. state .. (state == 'held' and ' before any write' or '') ..
    '; only a complete version whose data is kept can go live'}
end
local backwards = live ~= nil and live ~= false and not newer(target, live)
if kind == 'rollback' then
  if not live then return {'refused', 'the dataset has no live version'} end
  if state ~= 'backup' and state ~= 'rolled_back' then
    return {'refused', 'version is ' .. state .. '; only retained backups can be rolled back to'}
  end
  if not backwards then
    return {'refused', 'version is newer than live version ' .. live .. '; a rollback goes back (promote --force goes anywhere)'}
  end
elseif kind == 'promote' then
  if not forced then
    if state ~= 'held' then
      return {'refused', 'version is ' .. state .. '; only held versions are promoted (--force puts any kept version live)'}
    end
    if backwards then
      return {'refused', 'a newer version, ' .. live .. ', is live (--force puts the older one live and rolls back)'}
    end
    if floor and not newer(target, floor) then
      return {'refused', 'not newer than ' .. floor .. ', which was rolled back (--force overrides)'}
    end
  end
else
  return {'refused', 'unknown move'}
end
local missing = unreplayed(KEYS[4], KEYS[5], ARGV[5])
if missing then return {'replay', missing} end

local now = now_ms()
redis.call('HSET', KEYS[2], 'version', target, 'buckets', redis.call('HGET', KEYS[1], 'buckets'),
  'since_ms', now, 'previous', live or '')
if backwards then
  if not floor or newer(live, floor) then floor = live end
  redis.call('HSET', KEYS[2], 'rolled_back_from', live, 'rolled_back_ms', now, 'floor', floor)
  redis.call('HSET', ARGV[3] .. live, 'state', 'rolled_back', 'retired_ms', now)
else
  redis.call('HDEL', KEYS[2], 'rolled_back_from', 'rolled_back_ms')
  if live then redis.call('HSET', ARGV[3] .. live, 'state', 'backup', 'retired_ms', now) end
end
redis.call('HSET', KEYS[1], 'state', 'live', 'live_ms', now)
redis.call('HDEL', KEYS[1], 'reason', 'retired_ms')
log_to(KEYS[3], {event = kind, version = target, previous = live or nil, forced = forced or nil,
  backwards = backwards or nil, at_ms = now})
return {kind == 'rollback' and 'rolled_back' or 'promoted', live or ''}
