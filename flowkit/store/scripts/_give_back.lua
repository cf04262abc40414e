-- Undo the claim of a task run its executor never started: pending again, at the front of its
-- queue, with the attempt number, the 'running' history entry and the counters taken back, as
-- if never claimed. The caller has already taken it off the processing list.
-- @include _bell.lua
local function give_back(id, tr, flow_run_key, queue_key, job_key, stats_key)
  redis.call('HINCRBY', tr, 'attempt', -1)
  redis.call('HSET', tr, 'state', 'pending')
  redis.call('HDEL', tr, 'started', 'worker', 'executor')
  redis.call('RPOP', tr .. ':history')
  redis.call('HINCRBY', flow_run_key, 'n_running', -1)
  redis.call('HINCRBY', flow_run_key, 'n_pending', 1)
  redis.call('HSET', job_key, 'status', 'queued')
  push_task(queue_key, id, true)
  redis.call('HINCRBY', stats_key, 'running', -1)
end
