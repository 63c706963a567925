-- Marks one chunk of a version done. When that makes every chunk done, the
-- version moves to `validating` (at `written_ms`, the server's time, so a
-- version's record tells how long its count, checks and flip took) and the
-- caller finalizes it.
-- KEYS[1] version hash, KEYS[2] done-chunks set, KEYS[3] plan hash
-- ARGV[1] chunk index, ARGV[2] its byte range `start-end`, ARGV[3] users
-- written by the chunk, ARGV[4] bad records skipped by the chunk
-- Returns {outcome, n, text}: {'progress', done, total}, {'ready', done, ''},
-- {'not-planned', chunks, planned range or ''}, or {state, 0, ''} when the
-- version settled before ('unknown' when it is gone).
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'unknown', 0, ''} end
-- A settled version answers with its state whatever the message says.
if state ~= 'ingesting' and state ~= 'validating' then return {state, 0, ''} end
local total = tonumber(redis.call('HGET', KEYS[1], 'chunks'))
local planned = redis.call('HGET', KEYS[3], ARGV[1])
if planned ~= ARGV[2] then return {'not-planned', total, planned or ''} end

if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'users_written', ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'bad_records', ARGV[4])
end
local done = redis.call('SCARD', KEYS[2])
redis.call('HSET', KEYS[1], 'chunks_done', done)
if done < total then return {'progress', done, tostring(total)} end
redis.call('HSET', KEYS[1], 'state', 'validating', 'written_ms', now_ms())
return {'ready', done, ''}
