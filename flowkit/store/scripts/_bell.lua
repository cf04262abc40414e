-- Every queue has a bell (flowkit:bell:<queue name>, a short list of tokens). Workers that
-- serve several queues wait on the bells, never on the queues themselves: a blocking pop from
-- a queue would hold the id outside Redis until the claim script records it, and an executor
-- killed in between would lose that task. Whatever puts a task run on a queue rings its bell.
local BELL_PREFIX = 'flowkit:bell:'
local QUEUE_PREFIX_LEN = string.len('rq:queue:')
local MAX_TOKENS = 256

local function bell_of(queue_key)
  return BELL_PREFIX .. string.sub(queue_key, QUEUE_PREFIX_LEN + 1)
end

-- Wake up to n waiting executors of the queue (one token wakes one).
local function ring(queue_key, n)
  if n <= 0 then return end
  local tokens = {}
  for i = 1, math.min(n, 64) do tokens[i] = '1' end
  local bell = bell_of(queue_key)
  redis.call('RPUSH', bell, unpack(tokens))
  redis.call('LTRIM', bell, 0, MAX_TOKENS - 1)
end

-- Put a task run on its queue (at the front when it was given back) and ring the bell.
local function push_task(queue_key, id, front)
  if front then
    redis.call('LPUSH', queue_key, id)
  else
    redis.call('RPUSH', queue_key, id)
  end
  ring(queue_key, 1)
end
