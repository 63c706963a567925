-- Marks a version that is still ingesting as failed, so it can never go live.
-- A version that already completed is left as it is.
-- KEYS[1] version hash, KEYS[2] log list; ARGV[1] reason, ARGV[2] now (ms),
-- ARGV[3] version id
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'ingesting' and state ~= 'validating' then return state or 'unknown' end
redis.call('HSET', KEYS[1], 'state', 'failed', 'reason', ARGV[1], 'failed_ms', ARGV[2])
redis.call('LPUSH', KEYS[2], cjson.encode({event = 'failed', version = ARGV[3], reason = ARGV[1], at_ms = tonumber(ARGV[2])}))
redis.call('LTRIM', KEYS[2], 0, 99)
return 'failed'
