-- Puts a version held before any write (the memory guard) back to
-- `ingesting`, so its planned chunks can be sent; its age starts again.
-- KEYS[1] version hash, KEYS[2] log list; ARGV[1] version id
-- Returns 1 when resumed, 0 when the version is not held unwritten.
if redis.call('HGET', KEYS[1], 'state') ~= 'held' or redis.call('HGET', KEYS[1], 'unwritten') ~= '1' then return 0 end
local now = now_ms()
redis.call('HSET', KEYS[1], 'state', 'ingesting', 'created_ms', now)
redis.call('HDEL', KEYS[1], 'unwritten', 'reason')
log_to(KEYS[2], {event = 'resumed', version = ARGV[1], at_ms = now})
return 1
