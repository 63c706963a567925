-- Marks a version that is still ingesting as failed, so it can never go live.
-- A version that already completed is left as it is.
-- KEYS[1] version hash, KEYS[2] log list; ARGV[1] reason, ARGV[2] version id,
-- ARGV[3] minimum age in ms (0: any): only a version registered at least this
-- long ago by the server's clock fails (abandonment)
-- Returns the state afterwards, or 'young' when the version is not old enough.
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'ingesting' and state ~= 'validating' then return state or 'unknown' end
local now = now_ms()
local min_age = tonumber(ARGV[3])
if min_age > 0 and now - tonumber(redis.call('HGET', KEYS[1], 'created_ms') or now) < min_age then return 'young' end
redis.call('HSET', KEYS[1], 'state', 'failed', 'reason', ARGV[1], 'failed_ms', now)
log_to(KEYS[2], {event = 'failed', version = ARGV[2], reason = ARGV[1], at_ms = now})
return 'failed'
