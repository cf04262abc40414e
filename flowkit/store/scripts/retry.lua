-- Retry a flow run's failed task runs (from the dashboard or the CLI): each whose envelope is
-- still stored goes back to its queue as a new attempt; the flow run becomes RUNNING again and
-- closes itself when its last task run ends (finish.lua / crash.lua).
-- KEYS[1] = flow run hash   KEYS[2] = its task index   KEYS[3] = events stream
-- ARGV[1] = now             ARGV[2] = task run key prefix   ARGV[3] = RQ job key prefix
-- ARGV[4] = RQ queue key prefix   ARGV[5] = key prefix of flow run indexes by state
-- ARGV[6] = flow run id
-- Returns {retried, not retryable (envelope expired or never written)}.
-- @include _bell.lua
local now = tonumber(ARGV[1])
local retried, skipped = 0, 0
local retryable = {failed = true, crashed = true, timed_out = true}
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local tr = ARGV[2] .. id
  local f = redis.call('HMGET', tr, 'state', 'queue', 'attempt')
  if retryable[f[1]] then
    local job = ARGV[3] .. id
    if redis.call('HEXISTS', job, 'flowkit_envelope') == 1 then
      redis.call('PERSIST', job)
      redis.call('HSET', job, 'status', 'queued')
      redis.call('HSET', tr, 'state', 'pending', 'updated', now, 'crashes', 0)
      redis.call('HDEL', tr, 'ended', 'duration')
      redis.call('RPUSH', tr .. ':history', cjson.encode({state = 'pending', ts = now,
        attempt = tonumber(f[3]), message = 'retried by request'}))
      redis.call('HINCRBY', KEYS[1], 'n_' .. f[1], -1)
      redis.call('HINCRBY', KEYS[1], 'n_pending', 1)
      push_task(ARGV[4] .. f[2], id, false)
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 'kind', 'task', 'id', id,
                 'flow_run_id', ARGV[6], 'state', 'pending')
      retried = retried + 1
    else
      skipped = skipped + 1
    end
  end
end
if retried > 0 then
  local run = redis.call('HMGET', KEYS[1], 'state', 'created')
  redis.call('HSET', KEYS[1], 'state', 'running', 'auto_close', '1', 'updated', now)
  redis.call('HDEL', KEYS[1], 'ended')
  redis.call('ZREM', ARGV[5] .. run[1], ARGV[6])
  redis.call('ZADD', ARGV[5] .. 'running', tonumber(run[2]) or now, ARGV[6])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 'kind', 'flow', 'id', ARGV[6],
             'state', 'running')
end
return {retried, skipped}
