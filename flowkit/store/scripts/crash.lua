-- End attempts that will never report an outcome themselves: their executor died, their
-- worker stopped renewing leases (killed, frozen, cut off), or the supervisor killed them for
-- a hard timeout or a cancellation. Each is retried, dead-lettered or ended.
-- KEYS[1] = leases sorted set (flowkit:leases)     KEYS[2] = dead-letter list
-- KEYS[3] = events stream                        KEYS[4] = cancelling set
-- ARGV[1] = now       ARGV[2] = 'expired' (every lease past due) or 'ids' (ARGV[12..])
-- ARGV[3] = task run key prefix   ARGV[4] = flow run key prefix
-- ARGV[5] = processing key prefix ARGV[6] = RQ queue key prefix   ARGV[7] = RQ job key prefix
-- ARGV[8] = outcome: 'crashed', 'timed_out' or 'cancelled'
-- ARGV[9] = message   ARGV[10] = crashes before a task run is dead-lettered
-- ARGV[11] = reply stream max length   ARGV[12] = result ttl ms
-- ARGV[13] = queue stats key prefix     ARGV[14] = key prefix of flow run indexes by state
-- ARGV[15..] = task run ids (mode 'ids')
-- @include _close_run.lua
-- @include _give_back.lua

-- When a whole worker died (mode 'expired', outcome 'crashed'), its executors had also claimed
-- task runs they had not started yet (a batch of fast tasks is claimed at once). Only an attempt
-- that was running counts as a crash against its task run: the one its supervisor last saw
-- running (renew.lua marks it 'in_hand'), or else the first in its executor's processing list.
-- The others go back to the front of their queue, as if never claimed, so a task batched with
-- a poison pill is not dead-lettered for the pill's crashes.
-- Returns the ids it ended or sent back to the queue.
local now = tonumber(ARGV[1])
local ids = {}
if ARGV[2] == 'expired' then
  ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)
else
  for i = 15, #ARGV do table.insert(ids, ARGV[i]) end
end
local error_types = {crashed = 'flowkit.errors.WorkerCrashed',
                     timed_out = 'flowkit.errors.TaskTimeout',
                     cancelled = 'flowkit.errors.CancelledRun'}
local outcome = ARGV[8]
local whole_worker = ARGV[2] == 'expired' and outcome == 'crashed'
-- Heads of the processing lists, read before this script changes any of them.
local heads = {}
if whole_worker then
  for _, id in ipairs(ids) do
    local executor = redis.call('HGET', ARGV[3] .. id, 'executor')
    if executor and heads[executor] == nil then
      heads[executor] = redis.call('LINDEX', ARGV[5] .. executor, 0) or ''
    end
  end
end

-- A claimed task run its executor never started: back to the front of its queue, with a
-- history entry saying why (give_back took the 'running' one back).
local function requeue_unstarted(id, tr, f)
  redis.call('LREM', ARGV[5] .. f[4], 0, id)
  give_back(id, tr, ARGV[4] .. f[5], ARGV[6] .. f[7], ARGV[7] .. id, ARGV[13] .. (f[7] or ''))
  redis.call('HSET', tr, 'updated', now)
  redis.call('RPUSH', tr .. ':history', cjson.encode({state = 'pending', ts = now,
    attempt = tonumber(f[2]) - 1, worker = f[3],
    message = 'claimed by worker ' .. (f[3] or '?') .. ', which died before starting it; ' ..
              'queued again'}))
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 'kind', 'task', 'id', id,
             'flow_run_id', f[5], 'state', 'pending')
end

local handled = {}
for _, id in ipairs(ids) do
  local tr = ARGV[3] .. id
  local f = redis.call('HMGET', tr, 'state', 'attempt', 'worker', 'executor', 'flow_run_id',
                       'reply_to', 'queue', 'retries', 'in_hand')
  redis.call('ZREM', KEYS[1], id)
  redis.call('SREM', KEYS[4], id)
  if f[1] == 'running' and whole_worker and f[4] and f[9] ~= f[2] and heads[f[4]] ~= id then
    requeue_unstarted(id, tr, f)
    table.insert(handled, id)
  elseif f[1] == 'running' then
    if f[4] then redis.call('LREM', ARGV[5] .. f[4], 0, id) end
    local message = ARGV[9]
    if ARGV[2] == 'expired' then
      message = 'worker ' .. (f[3] or '?') .. ' stopped renewing its lease (killed, frozen or ' ..
                'cut off from Redis)'
    end
    local attempt = tonumber(f[2])
    local retry = false
    if outcome == 'crashed' then
      local crashes = redis.call('HINCRBY', tr, 'crashes', 1)
      retry = crashes < tonumber(ARGV[10])
      if not retry then
        message = message .. '; dead-lettered after ' .. crashes .. ' crashes'
        redis.call('RPUSH', KEYS[2], id)
      end
    elseif outcome == 'timed_out' then
      retry = attempt <= tonumber(f[8] or '0')
    end
    local entry = {state = outcome, ts = now, attempt = attempt, worker = f[3],
                   error_type = error_types[outcome], message = message}
    local fr = ARGV[4] .. f[5]
    redis.call('HINCRBY', fr, 'n_running', -1)
    redis.call('HINCRBY', ARGV[13] .. (f[7] or ''), 'running', -1)
    redis.call('HSET', tr, 'error_type', error_types[outcome], 'error_message', message,
               'traceback', '', 'updated', now)
    if retry then
      entry.retry_in = 0
      redis.call('RPUSH', tr .. ':history', cjson.encode(entry))
      redis.call('HSET', tr, 'state', 'retrying')
      redis.call('HINCRBY', fr, 'n_retrying', 1)
      redis.call('HSET', ARGV[7] .. id, 'status', 'queued')
      push_task(ARGV[6] .. f[7], id, false)
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 'kind', 'task', 'id', id,
                 'flow_run_id', f[5], 'state', 'retrying')
    else
      redis.call('RPUSH', tr .. ':history', cjson.encode(entry))
      local started = tonumber(redis.call('HGET', tr, 'started') or now)
      redis.call('HSET', tr, 'state', outcome, 'ended', now, 'duration', now - started)
      redis.call('HINCRBY', fr, 'n_' .. outcome, 1)
      redis.call('HSET', ARGV[7] .. id, 'status', 'failed')
      redis.call('PEXPIRE', ARGV[7] .. id, ARGV[12])
      local minute = math.floor(now / 60)
      redis.call('HINCRBY', ARGV[13] .. (f[7] or ''), 'failed:' .. minute, 1)
      if f[6] and f[6] ~= '' then
        redis.call('XADD', f[6], 'MAXLEN', '~', ARGV[11], '*', 'kind', 'done', 'id', id,
                   'state', outcome, 'error_type', error_types[outcome],
                   'error_message', message, 'traceback', '', 'exception', '')
      end
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 'kind', 'task', 'id', id,
                 'flow_run_id', f[5], 'state', outcome)
    end
    close_if_done(fr, ARGV[14], now)
    table.insert(handled, id)
  end
end
return handled
