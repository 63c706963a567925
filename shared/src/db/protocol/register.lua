-- Registers a version once, with its plan. Re-running the planner for the
-- same event finds the version already there and changes nothing: the stored
-- plan (chunk ranges, bucket count) is the one every chunk must match.
-- KEYS[1] version hash, KEYS[2] versions index, KEYS[3] plan hash
-- ARGV[1] version id, ARGV[2] n, ARGV[3 .. 2+n] field/value pairs of the
-- version record, ARGV[3+n ..] chunk index/range pairs of the plan
-- Returns 'created', or the state of the version already there.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HGET', KEYS[1], 'state') or 'unknown'
end
local n = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 3, 2 + n))
redis.call('HSET', KEYS[1], 'created_ms', now_ms())
redis.call('DEL', KEYS[3])
-- In slices: unpack of a very long plan would overflow Lua's stack.
local i = 3 + n
while i <= #ARGV do
  local last = math.min(i + 999, #ARGV)
  redis.call('HSET', KEYS[3], unpack(ARGV, i, last))
  i = last + 1
end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 'created'
