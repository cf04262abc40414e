-- registry.lua: the worker registry's clock. Heartbeats are stamped with the server's TIME
-- (not the worker host's), so ages and "is it alive" compare one clock: a worker an hour
-- behind would otherwise look dead at once, and one ahead would show negative ages.

-- heartbeat(a): refresh a worker's liveness in the registry and in each queue it serves.
-- a[1] = worker id   a[2] = busy executors   a[3] = '1' when the worker starts now (stamps
-- 'started' too)   a[4] = seconds the worker's hash is kept after its last heartbeat
-- a[5..] = queue names it serves
-- Returns the server's now (the heartbeat's stamp), as a string.
register('heartbeat', function(_, args)
  local ctx, a = context(args)
  local worker = K.worker(a[1])
  redis.call('HSET', worker, 'heartbeat', ctx.ts, 'busy', a[2])
  if a[3] == '1' then redis.call('HSET', worker, 'started', ctx.ts) end
  redis.call('EXPIRE', worker, tonumber(a[4]))
  redis.call('ZADD', K.WORKERS, ctx.now, a[1])
  for i = 5, #a do
    redis.call('ZADD', K.queue_workers(a[i]), ctx.now, a[1])
    redis.call('SADD', K.RQ_QUEUES, K.queue(a[i]))
  end
  return ctx.ts
end)
