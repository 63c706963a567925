-- Decides a complete version's fate and, if it passes, flips the dataset's
-- live pointer to it. Atomic: a reader sees the pointer before or after.
-- KEYS[1] version hash, KEYS[2] live pointer hash, KEYS[3] log list,
-- KEYS[4] delta log (sorted set), KEYS[5] deltas replayed onto the version
-- ARGV[1] version id, ARGV[2] distinct users found in the version's buckets,
-- ARGV[3] prefix of version hash keys (same hash tag),
-- ARGV[4] strict (1) or lenient (0), ARGV[5] max bad fraction (lenient),
-- ARGV[6] min user fraction of the live version (0: no guard),
-- ARGV[7] the version's event time (ms)
-- Returns {outcome, reason}; {'replay', delta id} when a delta newer than the
-- version is logged and not replayed onto it yet: the caller replays the
-- newer deltas and calls again.

-- (`newer`, `now_ms`, `unreplayed` and `log_to` are prepended from lib.lua.)
local function log(entry) log_to(KEYS[3], entry) end

local version, now = ARGV[1], now_ms()
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'validating' then return {state or 'unknown', ''} end

-- The users are counted once, before any delta is replayed onto them.
local counted = redis.call('HGET', KEYS[1], 'counted_users')
local distinct = tonumber(counted or ARGV[2])
if not counted then redis.call('HSET', KEYS[1], 'counted_users', distinct) end
local written = tonumber(redis.call('HGET', KEYS[1], 'users_written') or '0')
local bad = tonumber(redis.call('HGET', KEYS[1], 'bad_records') or '0')
local duplicates = math.max(written - distinct, 0)
redis.call('HSET', KEYS[1], 'users', distinct, 'duplicates', duplicates, 'completed_ms', now)

local function settle(new_state, reason)
  redis.call('HSET', KEYS[1], 'state', new_state, 'reason', reason)
  log({event = new_state, version = version, reason = reason, at_ms = now})
  return {new_state, reason}
end

if ARGV[4] == '1' and duplicates > 0 then
  return settle('failed', string.format('%d users were written but %d are stored: %d user ids appear more than once ' ..
    '(or writes were lost in a failover without FS_REPLICA_ACKS)', written, distinct, duplicates))
end
if ARGV[4] ~= '1' then
  bad = bad + duplicates
  local total = distinct + bad
  if total > 0 and bad / total > tonumber(ARGV[5]) then
    return settle('failed', string.format('%d of %d records are bad (%.2f%%), above the %.2f%% allowed',
      bad, total, 100 * bad / total, 100 * tonumber(ARGV[5])))
  end
end
if distinct == 0 then
  return settle('failed', 'the batch holds no users')
end
local expected = redis.call('HGET', KEYS[1], 'expected_records')
local records = written + tonumber(redis.call('HGET', KEYS[1], 'bad_records') or '0')
if expected and tonumber(expected) ~= records then
  return settle('failed', string.format('the manifest says %s rows; the files hold %d records', expected, records))
end

local live = redis.call('HGET', KEYS[2], 'version')
local floor = redis.call('HGET', KEYS[2], 'floor')
if floor and not newer(version, floor) then
  return settle('superseded', 'not newer than ' .. floor .. ', which was rolled back')
end
if live and not newer(version, live) then
  return settle('superseded', 'a newer version, ' .. live .. ', is already live')
end
local min_fraction = tonumber(ARGV[6])
if live and min_fraction > 0 then
  local live_users = tonumber(redis.call('HGET', ARGV[3] .. live, 'users') or '0')
  if distinct < min_fraction * live_users then
    return settle('held', string.format('%d users is below %d%% of the %d users of live version %s',
      distinct, math.floor(min_fraction * 100 + 0.5), live_users, live))
  end
end

local missing = unreplayed(KEYS[4], KEYS[5], ARGV[7])
if missing then return {'replay', missing} end

redis.call('HSET', KEYS[2], 'version', version, 'buckets', redis.call('HGET', KEYS[1], 'buckets'),
  'since_ms', now, 'previous', live or '')
redis.call('HDEL', KEYS[2], 'rolled_back_from', 'rolled_back_ms')
redis.call('HSET', KEYS[1], 'state', 'live', 'live_ms', now)
if live then redis.call('HSET', ARGV[3] .. live, 'state', 'backup', 'retired_ms', now) end
log({event = 'flipped', version = version, previous = live or nil, users = distinct, at_ms = now})
return {'flipped', ''}
