-- Registers a version once. Re-running the planner for the same event finds
-- the version already there and changes nothing.
-- KEYS[1] version hash, KEYS[2] versions index
-- ARGV[1] version id, ARGV[2..] field/value pairs of the version record
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HGET', KEYS[1], 'state')
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 'created'
