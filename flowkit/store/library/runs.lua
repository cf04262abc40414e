-- runs.lua: what drivers, the CLI and the dashboard do to runs: create and move flow runs,
-- cancel, retry.

-- flow_run_create(a): record a new flow run and index it.
-- a[1] = id   a[2] = name   a[3] = kind ('flow', 'adhoc')   a[4] = state
-- a[5] = parameters JSON preview   a[6] = tags JSON   a[7] = parent flow run id ('' = none)
-- a[8] = the driver's reply stream
-- Returns 1, or 0 when a run with that id exists already (nothing is written).
register('flow_run_create', function(_, args)
  local ctx, a = context(args)
  return create_flow_run(ctx, {id = a[1], name = a[2], kind = a[3], state = a[4],
                               parameters = a[5], tags = a[6], parent = a[7],
                               reply_to = a[8]}) and 1 or 0
end)

-- flow_run_move(a): move a flow run to another state, checked against the state table.
-- a[1] = id   a[2] = new state   a[3..] = field, value pairs to set with it (error_type,
-- error_message, traceback, result...)
-- Returns the state it left, or false (nil in Python) when there is no such run or the
-- move is not allowed (it ended already, say: cancelled while its driver finished it).
register('flow_run_move', function(_, args)
  local ctx, a = context(args)
  local extra = {}
  for i = 3, #a do extra[i - 2] = a[i] end
  return move_flow_run(ctx, a[1], a[2], extra, false)
end)

-- flow_run_close(a): a driver leaves a flow run (the ad-hoc run of a script or notebook):
-- with no task run still to come it ends now (as close_if_done decides); otherwise it closes by
-- itself when its last task run ends (auto_close). a[1] = id.
-- Returns the state it ended in, or 'running' when it closes later.
register('flow_run_close', function(_, args)
  local ctx, a = context(args)
  local fr = K.flow_run(a[1])
  if S.TERMINAL[redis.call('HGET', fr, 'state') or 'completed'] then return false end
  redis.call('HSET', fr, 'auto_close', '1')
  close_if_done(ctx, a[1])
  return redis.call('HGET', fr, 'state')
end)

-- cancel(a): cancel task runs, one bounded chunk per call (task_runs.cancel pages a big run
-- through it). Queued and waiting ones end CANCELLED at once; running ones are flagged, and
-- the supervisor running each kills it and records CANCELLED (reap).
-- a[1] = message   a[2] = flow run id ('' = none): the flow run ends CANCELLED and its driver
-- is told to stop the flow function (the caller sends its task runs in the chunks)
-- a[3] = '1' to take the cancelled ids off their queues here (a handful: one LREM each)
-- a[4..] = task run ids
-- Otherwise a queued id stays on its queue list: an LREM per id walks the whole list each
-- time (20,000 ids behind a backlog blocked the server for seconds). The claim drops ids
-- that are no longer queued-state, and sweep (below) removes them in bounded stretches.
-- Returns {task runs cancelled at once, running attempts flagged, queue names that still
-- hold cancelled ids...}.
register('cancel', function(_, args)
  local ctx, a = context(args)
  local message, flow_run_id = a[1], a[2]
  if flow_run_id ~= '' then
    local driver = redis.call('HGET', K.flow_run(flow_run_id), 'reply_to')
    if move_flow_run(ctx, flow_run_id, 'cancelled', {'error_type', C.ERROR_TYPES.cancelled,
                                                     'error_message', message}, false) then
      reply(driver, {'kind', 'cancel_flow', 'id', flow_run_id, 'message', message})
    end
  end
  local dropped, flagged, queues, out = 0, 0, {}, {0, 0}
  for i = 4, #a do
    local t = load_task(a[i])
    if t.state == 'pending' or t.state == 'retrying' then
      redis.call('ZREM', K.RETRIES_DUE, t.id)
      if a[3] == '1' then redis.call('LREM', K.queue(t.queue or ''), 1, t.id) end
      if end_task_run(ctx, t, 'cancelled', {error_type = C.ERROR_TYPES.cancelled,
                                            message = message}) then
        dropped = dropped + 1
        if a[3] ~= '1' and t.queue and not queues[t.queue] then
          queues[t.queue] = true
          table.insert(out, t.queue)
        end
      end
    elseif t.state == 'running' then
      redis.call('SADD', K.CANCELLING, t.id)
      redis.call('HSET', t.key, 'cancel_requested', ctx.ts)
      flagged = flagged + 1
    end
  end
  out[1], out[2] = dropped, flagged
  return out
end)

-- sweep(a): remove the ids of ended task runs (cancelled while queued) from one stretch of a
-- queue: linear in the stretch, never a walk per id. a[1] = queue name   a[2] = index where
-- the stretch starts   a[3] = its length at most.
-- Ids whose task run is still queued-state, or that are not flowkit's, stay where they are.
-- Indexes shift between calls (claims pop the head): a stretch swept twice or skipped costs
-- nothing, since claims drop ended ids too.
-- Returns {where the next stretch starts, how many ids this stretch held, how many removed}.
register('sweep', function(_, args)
  local _, a = context(args)
  local queue, start, count = K.queue(a[1]), tonumber(a[2]), tonumber(a[3])
  local ids = redis.call('LRANGE', queue, start, start + count - 1)
  local removed = 0
  for i, id in ipairs(ids) do
    local state = redis.call('HGET', K.task_run(id), 'state')
    if state and S.TERMINAL[state] then
      -- A marker the list cannot otherwise hold (ids never contain a NUL byte).
      redis.call('LSET', queue, start + i - 1, '\0flowkit-swept')
      removed = removed + 1
    end
  end
  if removed > 0 then redis.call('LREM', queue, removed, '\0flowkit-swept') end
  return {start + #ids - removed, #ids, removed}
end)

-- retry(a): retry a flow run's failed task runs (dashboard, CLI). Each whose envelope is still
-- stored goes back to its queue as a new attempt; a flow run that had ended becomes RUNNING
-- again and closes by itself when its last task run ends. a[1] = flow run id.
-- Returns {retried, not retryable (envelope expired or never written)}.
register('retry', function(_, args)
  local ctx, a = context(args)
  local flow_run_id = a[1]
  local retried, skipped = 0, 0
  for _, id in ipairs(index_range(K.flow_run_tasks(flow_run_id), 0, -1)) do
    local t = load_task(id)
    if S.RETRYABLE[t.state] then
      local job = K.rq_job(id)
      if redis.call('HEXISTS', job, 'flowkit_envelope') == 1 then
        redis.call('PERSIST', job)
        reopen_task(ctx, t, 'retried by request')
        retried = retried + 1
      else
        skipped = skipped + 1
      end
    end
  end
  if retried > 0 then
    move_flow_run(ctx, flow_run_id, 'running', {'auto_close', '1'}, true)
  end
  return {retried, skipped}
end)
