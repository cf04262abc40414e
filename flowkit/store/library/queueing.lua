-- queueing.lua: putting task runs on their queues.
--
-- Every queue has a bell (K.bell(queue), a short list of tokens). Workers that serve several
-- queues wait on the bells, never on the queues themselves: a blocking pop from a queue would
-- hold the id outside Redis until the claim records it, and an executor killed in between
-- would lose that task. So whatever puts a task run on a queue rings its bell, here.

-- Wake up to n waiting executors of a queue (one token wakes one).
local function ring(queue, n)
  if n <= 0 then return end
  local tokens = {}
  for i = 1, math.min(n, 64) do tokens[i] = '1' end
  local bell = K.bell(queue)
  redis.call('RPUSH', bell, unpack(tokens))
  redis.call('LTRIM', bell, 0, C.BELL_MAX_TOKENS - 1)
end

-- Put a task run on its queue (at the front when it was given back), mark its RQ job queued
-- and ring the bell.
local function queue_task(id, queue, front)
  redis.call('HSET', K.rq_job(id), 'status', 'queued')
  if front then
    redis.call('LPUSH', K.queue(queue), id)
  else
    redis.call('RPUSH', K.queue(queue), id)
  end
  ring(queue, 1)
end
