-- Write a batch of task runs of one task and flow run, and queue the ready ones.
-- KEYS[1] = the queue list            KEYS[2] = the flow run hash
-- KEYS[3] = the flow run's task index KEYS[4] = RQ's queue registry (rq:queues)
-- ARGV[1] = now (epoch seconds)       ARGV[2] = now as ISO-8601 (RQ's format)
-- ARGV[3] = flow run id               ARGV[4] = task name
-- ARGV[5] = queue name                ARGV[6] = reply stream of the driver
-- ARGV[7] = tags JSON                 ARGV[8] = retries
-- ARGV[9] = task run key prefix       ARGV[10] = RQ job key prefix
-- ARGV[11], ARGV[12] = RQ job data before and after the id (pickled call of run_task_run)
-- then per task run, 6 values: id, envelope head, envelope body ('' when the caller wrote it
-- already with HSET), parameters JSON, held ('1'/'0'), upstream ids
local now = ARGV[1]
local n = 0
for i = 13, #ARGV, 6 do
  local id, held = ARGV[i], ARGV[i + 4]
  redis.call('HSET', ARGV[9] .. id, 'id', id, 'flow_run_id', ARGV[3], 'task_name', ARGV[4],
    'queue', ARGV[5], 'state', 'pending', 'attempt', 0, 'created', now, 'updated', now,
    'reply_to', ARGV[6], 'parameters', ARGV[i + 3], 'tags', ARGV[7], 'retries', ARGV[8],
    'upstream', ARGV[i + 5])
  redis.call('HSET', ARGV[10] .. id, 'created_at', ARGV[2], 'enqueued_at', ARGV[2],
    'data', ARGV[11] .. id .. ARGV[12], 'origin', ARGV[5], 'timeout', -1,
    'description', 'flowkit task ' .. ARGV[4] .. ' (' .. id .. ')',
    'status', held == '1' and 'deferred' or 'queued', 'flowkit_envelope', ARGV[i + 1])
  if ARGV[i + 2] ~= '' then
    redis.call('HSET', ARGV[10] .. id, 'flowkit_body', ARGV[i + 2])
  end
  redis.call('ZADD', KEYS[3], now, id)
  if held ~= '1' then redis.call('RPUSH', KEYS[1], id) end
  n = n + 1
end
redis.call('HINCRBY', KEYS[2], 'n_pending', n)
redis.call('HINCRBY', KEYS[2], 'n_total', n)
redis.call('SADD', KEYS[4], KEYS[1])
return n
