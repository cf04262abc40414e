-- Claim up to N task runs for an executor and mark them running.
-- KEYS[1] = processing list of the executor (flowkit:processing:<executor>)
-- KEYS[2] = unused (kept for the key layout)
-- KEYS[3] = leases sorted set (flowkit:leases), score: when the attempt is presumed dead
-- KEYS[4..n] = RQ queue lists in priority order
-- ARGV[1] = now (epoch seconds)
-- ARGV[2] = worker id
-- ARGV[3] = task run key prefix      ARGV[4] = flow run key prefix
-- ARGV[5] = RQ job key prefix
-- ARGV[6] = id already taken by a blocking pop ('' for none)
-- ARGV[7] = '1' when that id still has to be pushed onto the processing list (a stock RQ
--           worker popped it)
-- ARGV[8] = how many task runs to claim at most
-- ARGV[9] = bodies larger than this many bytes are not returned (the caller fetches them)
-- ARGV[10] = executor id   ARGV[11] = lease seconds   ARGV[12] = queue stats key prefix
-- ARGV[13] = events stream (the dashboard shows runs starting live)
-- Returns a list of {id, envelope head, envelope body, attempt, flow_run_id, reply_to}; ids that are neither
-- pending nor retrying (cancelled, already finished) are dropped from processing and skipped.
-- @include _bell.lua
local now = ARGV[1]

local function take(id)
  local tr = ARGV[3] .. id
  local f = redis.call('HMGET', tr, 'state', 'flow_run_id', 'reply_to', 'queue')
  if f[1] ~= 'pending' and f[1] ~= 'retrying' then
    redis.call('LREM', KEYS[1], 0, id)
    return nil
  end
  local attempt = redis.call('HINCRBY', tr, 'attempt', 1)
  redis.call('HSET', tr, 'state', 'running', 'started', now, 'worker', ARGV[2], 'updated', now,
             'executor', ARGV[10])
  redis.call('ZADD', KEYS[3], tonumber(now) + tonumber(ARGV[11]), id)
  redis.call('HINCRBY', ARGV[12] .. (f[4] or ''), 'running', 1)
  local fr = ARGV[4] .. f[2]
  redis.call('HINCRBY', fr, 'n_' .. f[1], -1)
  redis.call('HINCRBY', fr, 'n_running', 1)
  redis.call('RPUSH', tr .. ':history',
    cjson.encode({state = 'running', ts = tonumber(now), attempt = attempt, worker = ARGV[2]}))
  local job = ARGV[5] .. id
  redis.call('HSET', job, 'status', 'started', 'worker_name', ARGV[2])
  redis.call('XADD', ARGV[13], 'MAXLEN', '~', 10000, '*', 'kind', 'task', 'id', id,
             'flow_run_id', f[2], 'state', 'running')
  -- A large body is left for the executor to fetch with HGET: through Lua it would be copied
  -- twice more inside the server.
  if redis.call('HSTRLEN', job, 'flowkit_body') > tonumber(ARGV[9]) then
    return {id, redis.call('HGET', job, 'flowkit_envelope') or '', false, attempt, f[2], f[3]}
  end
  local envelope = redis.call('HMGET', job, 'flowkit_envelope', 'flowkit_body')
  return {id, envelope[1] or '', envelope[2] or '', attempt, f[2], f[3]}
end

local claims = {}
if ARGV[6] ~= '' then
  if ARGV[7] == '1' then redis.call('RPUSH', KEYS[1], ARGV[6]) end
  local c = take(ARGV[6])
  if c then table.insert(claims, c) end
end
local limit = tonumber(ARGV[8])
local qi = 4
while #claims < limit and qi <= #KEYS do
  local id = redis.call('LMOVE', KEYS[qi], KEYS[1], 'LEFT', 'RIGHT')
  if id then
    local c = take(id)
    if c then table.insert(claims, c) end
  else
    redis.call('DEL', bell_of(KEYS[qi]))  -- the queue is empty: its tokens would wake for nothing
    qi = qi + 1
  end
end
return claims
