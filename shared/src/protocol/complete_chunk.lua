-- Marks one chunk of a version done. When that makes every chunk done, the
-- version moves to `validating` and the caller runs `finalize`.
-- KEYS[1] version hash, KEYS[2] done-chunks set
-- ARGV[1] chunk index, ARGV[2] users written by the chunk, ARGV[3] bad
-- records skipped by the chunk
-- Returns {outcome, chunks done, chunks total}.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'unknown', 0, 0} end
local total = tonumber(redis.call('HGET', KEYS[1], 'chunks'))
local chunk = tonumber(ARGV[1])
if chunk == nil or chunk < 0 or chunk >= total then return {'bad-chunk', 0, total} end
if state ~= 'ingesting' and state ~= 'validating' then return {state, 0, total} end

if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'users_written', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'bad_records', ARGV[3])
end
local done = redis.call('SCARD', KEYS[2])
redis.call('HSET', KEYS[1], 'chunks_done', done)
if done < total then return {'progress', done, total} end
redis.call('HSET', KEYS[1], 'state', 'validating')
return {'ready', done, total}
