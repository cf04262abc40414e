-- Cancel task runs: queued and waiting ones end CANCELLED at once; running ones are flagged,
-- and the supervisor running each kills it and records CANCELLED (crash.lua).
-- KEYS[1] = cancelling set        KEYS[2] = scheduled sorted set     KEYS[3] = events stream
-- ARGV[1] = now                   ARGV[2] = task run key prefix      ARGV[3] = flow run key prefix
-- ARGV[4] = RQ queue key prefix   ARGV[5] = RQ job key prefix        ARGV[6] = reply max length
-- ARGV[7] = message               ARGV[8] = flow run id ('' = only the ids that follow)
-- ARGV[9..] = task run ids
-- Returns {running attempts flagged, ids of the task runs cancelled at once...}.
local now = tonumber(ARGV[1])
local ids = {}
if ARGV[8] ~= '' then
  ids = redis.call('ZRANGE', ARGV[3] .. ARGV[8] .. ':tasks', 0, -1)
end
for i = 9, #ARGV do table.insert(ids, ARGV[i]) end
local dropped, flagged = {}, 0
for _, id in ipairs(ids) do
  local tr = ARGV[2] .. id
  local f = redis.call('HMGET', tr, 'state', 'flow_run_id', 'reply_to', 'queue', 'attempt')
  local state = f[1]
  if state == 'pending' or state == 'retrying' then
    local queue_key = ARGV[4] .. f[4]
    redis.call('LREM', queue_key, 0, id)
    redis.call('ZREM', KEYS[2], queue_key .. '|' .. id)
    redis.call('HSET', tr, 'state', 'cancelled', 'ended', now, 'updated', now,
               'error_type', 'flowkit.errors.CancelledRun', 'error_message', ARGV[7])
    redis.call('RPUSH', tr .. ':history', cjson.encode({state = 'cancelled', ts = now,
      attempt = tonumber(f[5]), error_type = 'flowkit.errors.CancelledRun', message = ARGV[7]}))
    local fr = ARGV[3] .. f[2]
    redis.call('HINCRBY', fr, 'n_' .. state, -1)
    redis.call('HINCRBY', fr, 'n_cancelled', 1)
    redis.call('DEL', ARGV[5] .. id)
    if f[3] and f[3] ~= '' then
      redis.call('XADD', f[3], 'MAXLEN', '~', ARGV[6], '*', 'kind', 'done', 'id', id,
                 'state', 'cancelled', 'error_type', 'flowkit.errors.CancelledRun',
                 'error_message', ARGV[7], 'traceback', '', 'exception', '')
    end
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 'kind', 'task', 'id', id,
               'flow_run_id', f[2], 'state', 'cancelled')
    table.insert(dropped, id)
  elseif state == 'running' then
    redis.call('SADD', KEYS[1], id)
    redis.call('HSET', tr, 'cancel_requested', now)
    flagged = flagged + 1
  end
end
table.insert(dropped, 1, flagged)
return dropped
