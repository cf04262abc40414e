-- Record the outcome of one attempt, fenced by attempt number: a stale attempt writes nothing.
-- KEYS[1] = processing list of the executor      KEYS[2] = worker hash
-- KEYS[3] = task run hash                        KEYS[4] = result key
-- KEYS[5] = RQ job hash                          KEYS[6] = events stream
-- KEYS[7] = scheduled sorted set                 KEYS[8] = the task's queue list
-- KEYS[9] = leases sorted set                   KEYS[10] = cancelling set
-- KEYS[11] = stats hash of the task's queue (running count, finished per minute)
-- ARGV[1] = task run id      ARGV[2] = attempt      ARGV[3] = new state
-- ARGV[4] = now              ARGV[5] = sealed result bytes ('' when none)
-- ARGV[6] = result ttl ms    ARGV[7] = '1' to put the result inside the reply message
-- ARGV[8] = error type       ARGV[9] = error message     ARGV[10] = traceback text
-- ARGV[11] = pickled exception ('' when none)           ARGV[12] = flow run key prefix
-- ARGV[13] = worker id       ARGV[14] = retry delay seconds ('' = no retry)
-- ARGV[15] = reply stream max length
-- ARGV[16] = when the attempt really started ('' = as claimed); batched claims start later
-- ARGV[17] = key prefix of the flow run indexes by state
-- @include _bell.lua

-- @include _close_run.lua
-- Returns 1 when recorded, 0 when fenced off.
local id, attempt, state, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local tr = KEYS[3]
local cur = redis.call('HMGET', tr, 'state', 'attempt', 'flow_run_id', 'reply_to', 'started')
redis.call('LREM', KEYS[1], 0, id)
if cur[1] ~= 'running' or cur[2] ~= attempt then
  return 0
end
local fr = ARGV[12] .. cur[3]
redis.call('HINCRBY', KEYS[11], 'running', -1)
redis.call('ZREM', KEYS[9], id)
redis.call('SREM', KEYS[10], id)
if ARGV[16] ~= '' then
  cur[5] = ARGV[16]
  redis.call('HSET', tr, 'started', ARGV[16])
  local last = redis.call('LINDEX', tr .. ':history', -1)
  if last then
    local started = cjson.decode(last)
    if started.state == 'running' and started.attempt == tonumber(attempt) then
      started.ts = tonumber(ARGV[16])
      redis.call('LSET', tr .. ':history', -1, cjson.encode(started))
    end
  end
end
local entry = {state = state, ts = tonumber(now), attempt = tonumber(attempt), worker = ARGV[13]}
if ARGV[8] ~= '' then
  entry.error_type = ARGV[8]
  entry.message = ARGV[9]
  redis.call('HSET', tr, 'error_type', ARGV[8], 'error_message', ARGV[9], 'traceback', ARGV[10])
end
redis.call('HINCRBY', fr, 'n_running', -1)

if ARGV[14] ~= '' then
  -- Another attempt follows: it waits in the scheduled set, holding no executor slot.
  entry.retry_in = tonumber(ARGV[14])
  redis.call('RPUSH', tr .. ':history', cjson.encode(entry))
  redis.call('HSET', tr, 'state', 'retrying', 'updated', now)
  redis.call('HINCRBY', fr, 'n_retrying', 1)
  redis.call('HSET', KEYS[5], 'status', 'scheduled')
  if tonumber(ARGV[14]) <= 0 then
    push_task(KEYS[8], id, false)
  else
    redis.call('ZADD', KEYS[7], tonumber(now) + tonumber(ARGV[14]), KEYS[8] .. '|' .. id)
  end
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', 10000, '*', 'kind', 'task', 'id', id,
             'flow_run_id', cur[3], 'state', 'retrying')
  return 1
end

local duration = tonumber(now) - (tonumber(cur[5]) or tonumber(now))
redis.call('HSET', tr, 'state', state, 'ended', now, 'updated', now, 'duration', duration)
redis.call('HINCRBY', fr, 'n_' .. state, 1)
redis.call('RPUSH', tr .. ':history', cjson.encode(entry))
if ARGV[5] ~= '' then
  redis.call('SET', KEYS[4], ARGV[5], 'PX', ARGV[6])
  redis.call('HSET', tr, 'result_size', string.len(ARGV[5]))
end
local minute = math.floor(tonumber(now) / 60)
redis.call('HDEL', KEYS[11], 'done:' .. (minute - 60), 'failed:' .. (minute - 60))
if state == 'completed' or state == 'cached' then
  redis.call('DEL', KEYS[5])
  redis.call('HINCRBY', KEYS[2], 'tasks_done', 1)
  redis.call('HINCRBY', KEYS[11], 'done:' .. minute, 1)
else
  -- Kept (expiring with the result) so that the run can be retried from the dashboard.
  redis.call('HSET', KEYS[5], 'status', 'failed')
  redis.call('PEXPIRE', KEYS[5], ARGV[6])
  redis.call('HINCRBY', KEYS[2], 'tasks_failed', 1)
  redis.call('HINCRBY', KEYS[11], 'failed:' .. minute, 1)
end
local msg = {'kind', 'done', 'id', id, 'state', state}
if ARGV[7] == '1' then
  table.insert(msg, 'result'); table.insert(msg, ARGV[5])
end
if ARGV[8] ~= '' then
  for _, kv in ipairs({{'error_type', ARGV[8]}, {'error_message', ARGV[9]},
                       {'traceback', ARGV[10]}, {'exception', ARGV[11]}}) do
    table.insert(msg, kv[1]); table.insert(msg, kv[2])
  end
end
if cur[4] and cur[4] ~= '' then
  redis.call('XADD', cur[4], 'MAXLEN', '~', ARGV[15], '*', unpack(msg))
end
redis.call('XADD', KEYS[6], 'MAXLEN', '~', 10000, '*', 'kind', 'task', 'id', id,
           'flow_run_id', cur[3], 'state', state)
close_if_done(fr, ARGV[17], tonumber(now))
return 1
