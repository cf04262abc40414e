-- Write a batch of task runs of one task and flow run, and queue the ready ones. A task run
-- with a cache key is answered from the cache when it can be; otherwise the first of several
-- identical calls runs (the leader) and the others wait for its result (single flight).
-- KEYS[1] = the queue list            KEYS[2] = the flow run hash
-- KEYS[3] = the flow run's task index KEYS[4] = RQ's queue registry (rq:queues)
-- KEYS[5] = events stream
-- ARGV[1] = now (epoch seconds)       ARGV[2] = now as ISO-8601 (RQ's format)
-- ARGV[3] = flow run id               ARGV[4] = task name
-- ARGV[5] = queue name                ARGV[6] = reply stream of the driver
-- ARGV[7] = tags JSON                 ARGV[8] = retries
-- ARGV[9] = task run key prefix       ARGV[10] = RQ job key prefix
-- ARGV[11], ARGV[12] = RQ job data before and after the id (pickled call of run_task_run)
-- ARGV[13] = cache key prefix         ARGV[14] = cache expiration ms ('' = none)
-- ARGV[15] = '1' to refresh the cache (run, never answer from it)
-- ARGV[16] = result key prefix        ARGV[17] = result ttl ms
-- ARGV[18] = reply stream max length  ARGV[19] = results up to this size ride in the reply
-- then per task run, 8 values: id, envelope head, envelope body ('' when the caller wrote it
-- already with HSET), parameters JSON, held ('1'/'0'), upstream ids, cache key ('' = none),
-- cache key parts JSON
-- Returns the number of task runs answered from the cache.
-- @include _bell.lua
local now = tonumber(ARGV[1])
local pending, hits, rung = 0, 0, 0
for i = 20, #ARGV, 8 do
  local id, held, cache_key = ARGV[i], ARGV[i + 4], ARGV[i + 6]
  local tr = ARGV[9] .. id
  redis.call('HSET', tr, 'id', id, 'flow_run_id', ARGV[3], 'task_name', ARGV[4],
    'queue', ARGV[5], 'state', 'pending', 'attempt', 0, 'created', now, 'updated', now,
    'reply_to', ARGV[6], 'parameters', ARGV[i + 3], 'tags', ARGV[7], 'retries', ARGV[8],
    'upstream', ARGV[i + 5])
  redis.call('ZADD', KEYS[3], now, id)
  local queued, value = held ~= '1', false
  if cache_key ~= '' then
    local base = ARGV[13] .. cache_key
    redis.call('HSET', tr, 'cache_key', cache_key, 'cache_parts', ARGV[i + 7],
               'cache_ttl_ms', ARGV[14], 'cache_refresh', ARGV[15])
    if ARGV[15] ~= '1' then
      value = redis.call('GET', base)
      if not value and queued then
        if not redis.call('SET', base .. ':lock', id, 'NX', 'PX', 86400000) then
          redis.call('RPUSH', base .. ':waiters', id)  -- another call computes this key
          redis.call('HSET', tr, 'cache_wait', '1')
          queued = false
        end
      end
    end
  end
  if value then
    redis.call('HSET', tr, 'state', 'cached', 'started', now, 'ended', now, 'duration', 0,
               'cache_hit', '1', 'result_size', string.len(value))
    redis.call('SET', ARGV[16] .. id, value, 'PX', ARGV[17])
    redis.call('RPUSH', tr .. ':history', cjson.encode({state = 'cached', ts = now,
      attempt = 0, message = 'answered from the cache (key ' .. cache_key .. ')'}))
    local msg = {'kind', 'done', 'id', id, 'state', 'cached'}
    if string.len(value) <= tonumber(ARGV[19]) then
      table.insert(msg, 'result'); table.insert(msg, value)
    end
    redis.call('XADD', ARGV[6], 'MAXLEN', '~', ARGV[18], '*', unpack(msg))
    redis.call('XADD', KEYS[5], 'MAXLEN', '~', 10000, '*', 'kind', 'task', 'id', id,
               'flow_run_id', ARGV[3], 'state', 'cached')
    hits = hits + 1
  else
    redis.call('HSET', ARGV[10] .. id, 'created_at', ARGV[2], 'enqueued_at', ARGV[2],
      'data', ARGV[11] .. id .. ARGV[12], 'origin', ARGV[5], 'timeout', -1,
      'description', 'flowkit task ' .. ARGV[4] .. ' (' .. id .. ')',
      'status', queued and 'queued' or 'deferred', 'flowkit_envelope', ARGV[i + 1])
    if ARGV[i + 2] ~= '' then
      redis.call('HSET', ARGV[10] .. id, 'flowkit_body', ARGV[i + 2])
    end
    if queued then
      redis.call('RPUSH', KEYS[1], id)
      rung = rung + 1
    end
    pending = pending + 1
  end
end
redis.call('HINCRBY', KEYS[2], 'n_pending', pending)
redis.call('HINCRBY', KEYS[2], 'n_cached', hits)
redis.call('HINCRBY', KEYS[2], 'n_total', pending + hits)
redis.call('SADD', KEYS[4], KEYS[1])
ring(KEYS[1], rung)
return hits
