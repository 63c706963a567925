-- Retention: claims a version for deletion, atomically with respect to
-- operator moves, so a rollback can never target data being deleted.
-- KEYS[1] version hash, KEYS[2] live pointer hash
-- ARGV[1] version id, ARGV[2..] states that may be deleted
-- Returns the state it had when claimed, or '' when it may not be deleted.
if redis.call('HGET', KEYS[2], 'version') == ARGV[1] then return '' end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return '' end
for i = 2, #ARGV do
  if state == ARGV[i] then
    redis.call('HSET', KEYS[1], 'deleting_from', state, 'state', 'deleting')
    return state
  end
end
if state == 'deleting' then return redis.call('HGET', KEYS[1], 'deleting_from') or 'deleting' end
return ''
