-- Retention: claims a version for deletion, atomically with respect to
-- operator moves, so a rollback can never target data being deleted, and
-- never within the grace after it stopped being live (a reader may still hold
-- its pointer), by the server's clock.
-- KEYS[1] version hash, KEYS[2] live pointer hash
-- ARGV[1] version id, ARGV[2] grace in ms, ARGV[3..] states that may be deleted
-- Returns the state it had when claimed, or '' when it may not be deleted.
if redis.call('HGET', KEYS[2], 'version') == ARGV[1] then return '' end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return '' end
if state == 'deleting' then return redis.call('HGET', KEYS[1], 'deleting_from') or 'deleting' end
local retired = tonumber(redis.call('HGET', KEYS[1], 'retired_ms') or '')
if retired and now_ms() - retired < tonumber(ARGV[2]) then return '' end
for i = 3, #ARGV do
  if state == ARGV[i] then
    redis.call('HSET', KEYS[1], 'deleting_from', state, 'state', 'deleting')
    return state
  end
end
return ''
