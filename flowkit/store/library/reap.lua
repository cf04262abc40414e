-- reap.lua: end attempts that will never report an outcome themselves. Their executor died,
-- their worker stopped renewing leases (killed, frozen, cut off), or their supervisor killed
-- them for a hard timeout or a cancellation. Each is retried, dead-lettered or ended.

-- A claimed task run its executor never started, after its whole worker died: back to the
-- front of its queue, with a history entry saying why.
local function requeue_unstarted(ctx, t)
  if t.executor then redis.call('LREM', K.processing(t.executor), 0, t.id) end
  return_unstarted(ctx, t, 'claimed by worker ' .. (t.worker or '?') .. ', which died ' ..
                           'before starting it; queued again')
end

-- One attempt that ends unreported: `outcome` is 'crashed', 'timed_out' or 'cancelled'.
-- retry_delay: for a hard timeout, the executor's retry decision made when the attempt
-- started (seconds; negative: no retry; nil: retry at once while retries remain).
local function end_unreported(ctx, t, outcome, message, retry_delay)
  if t.executor then redis.call('LREM', K.processing(t.executor), 0, t.id) end
  local o = {outcome = outcome, error_type = C.ERROR_TYPES[outcome], message = message,
             traceback = '', worker = t.worker}
  local delay = nil
  if outcome == 'crashed' then
    local crashes = redis.call('HINCRBY', t.key, 'crashes', 1)
    if crashes < ctx.max_crashes then
      delay = 0
    else
      o.message = message .. '; dead-lettered after ' .. crashes .. ' crashes'
      redis.call('RPUSH', K.DEAD_LETTER, t.id)
    end
  elseif outcome == 'timed_out' then
    if retry_delay then
      if retry_delay >= 0 then delay = retry_delay end
    elseif tonumber(t.attempt) <= (tonumber(redis.call('HGET', t.key, 'retries')) or 0) then
      delay = 0
    end
  end
  if delay then return schedule_attempt(ctx, t, delay, o) end
  return end_task_run(ctx, t, outcome, o)
end

-- reap(a): a[1] = 'expired' (every lease past due, at most 100 per call) or 'ids' (a[5..])
-- a[2] = outcome: 'crashed', 'timed_out' or 'cancelled'   a[3] = message
-- a[4] = retry delay seconds for a timed-out attempt ('' = retry at once if retries remain,
-- negative = no retry)   a[5..] = task run ids (mode 'ids')
-- When a whole worker died (mode 'expired', outcome 'crashed'), its executors had also
-- claimed task runs they had not started yet (fast tasks are claimed in batches). Only an
-- attempt that was running counts as a crash against its task run: the one its supervisor
-- last saw running ('in_hand', marked by renew), or else the first of its executor's
-- processing list. The others go back to their queue as if never claimed, so a task batched
-- with a poison pill is not dead-lettered for the pill's crashes.
-- Returns the ids it ended, retried or sent back to the queue.
register('reap', function(_, args)
  local ctx, a = context(args)
  local mode, outcome = a[1], a[2]
  local ids = {}
  if mode == 'expired' then
    ids = redis.call('ZRANGEBYSCORE', K.LEASES, '-inf', ctx.now, 'LIMIT', 0, 100)
  else
    for i = 5, #a do table.insert(ids, a[i]) end
  end
  local whole_worker = mode == 'expired' and outcome == 'crashed'
  local tasks, heads = {}, {}
  for _, id in ipairs(ids) do  -- heads of the processing lists, before anything changes them
    local t = load_task(id)
    tasks[id] = t
    if whole_worker and t.executor and heads[t.executor] == nil then
      heads[t.executor] = redis.call('LINDEX', K.processing(t.executor), 0) or ''
    end
  end
  local retry_delay = a[4] ~= '' and tonumber(a[4]) or nil
  local handled = {}
  for _, id in ipairs(ids) do
    local t = tasks[id]
    redis.call('ZREM', K.LEASES, id)
    redis.call('SREM', K.CANCELLING, id)
    if t.state == 'running' then
      local in_hand = redis.call('HGET', t.key, 'in_hand')
      if whole_worker and t.executor and in_hand ~= t.attempt and heads[t.executor] ~= id then
        requeue_unstarted(ctx, t)
      else
        local message = a[3]
        if mode == 'expired' then
          message = 'worker ' .. (t.worker or '?') .. ' stopped renewing its lease (killed, ' ..
                    'frozen or cut off from Redis)'
        end
        end_unreported(ctx, t, outcome, message, retry_delay)
      end
      table.insert(handled, id)
    end
  end
  return handled
end)

-- promote(a): queue the retries whose delay has passed (by the server's clock; every
-- supervisor calls it) at the FRONT of their queues, the earliest due first: their turn came
-- when they were first queued, and a backlog queued since must not add to their delay.
-- a: none. Returns how many were queued.
register('promote', function(_, args)
  local ctx = context(args)
  local due = redis.call('ZRANGEBYSCORE', K.RETRIES_DUE, '-inf', ctx.now, 'LIMIT', 0, 1000)
  for i = #due, 1, -1 do  -- LPUSH in reverse: the earliest due ends up first
    local id = due[i]
    redis.call('ZREM', K.RETRIES_DUE, id)
    local t = read(K.task_run(id), {'state', 'queue'})
    if t.state == 'retrying' then queue_task(id, t.queue, true) end
  end
  return #due
end)
