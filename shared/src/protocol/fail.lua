-- Marks a version that is still ingesting as failed, so it can never go live.
-- A version that already completed is left as it is.
-- KEYS[1] version hash; ARGV[1] reason, ARGV[2] now (ms)
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'ingesting' then return state or 'unknown' end
redis.call('HSET', KEYS[1], 'state', 'failed', 'reason', ARGV[1], 'failed_ms', ARGV[2])
return 'failed'
