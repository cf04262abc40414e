-- prune.lua: retention. Delete finished flow runs older than the cutoff, with everything
-- they own: task runs (with their histories), RQ jobs and results, the log stream, index entries.
-- The work per call is bounded (a run with 100,000 task runs goes over several calls), so
-- Redis never stalls; the caller repeats while the reply says there is more.

-- Whether flow run `id` may go now: finished, ended (or, without an end, created) before the
-- cutoff, and no task run still queued, running or retrying; an index entry whose hash is gone
-- may go too. Returns that and the fields read. One rule for prune and prune_preview.
local function prunable(id, cutoff)
  local f = read(K.flow_run(id), {'state', 'ended', 'created', 'name', 'n_pending', 'n_running',
                                  'n_retrying'})
  local ended = tonumber(f.ended or f.created or '0') or 0
  local busy = (tonumber(f.n_pending) or 0) + (tonumber(f.n_running) or 0) +
               (tonumber(f.n_retrying) or 0)
  return not (f.state and (not S.TERMINAL[f.state] or ended >= cutoff or busy > 0)), f
end

-- prune_preview(a): a[1] = cutoff (as for prune)   a[2] = cursor: skip this many flow runs
-- of the index range (0 first, then the reply's third value)   a[3] = look at this many
-- Writes nothing. Returns {flow runs that would go, their task runs, next cursor or 0: done}.
register('prune_preview', function(_, args)
  local _, a = context(args)
  local cutoff, offset, count = tonumber(a[1]), tonumber(a[2]), tonumber(a[3])
  local batch = redis.call('ZRANGEBYSCORE', K.FLOW_RUNS, '-inf', cutoff, 'LIMIT', offset, count)
  local flows, tasks = 0, 0
  for _, id in ipairs(batch) do
    if prunable(id, cutoff) then
      flows = flows + 1
      tasks = tasks + index_len(K.flow_run_tasks(id))
    end
  end
  if #batch < count then return {flows, tasks, 0} end
  return {flows, tasks, offset + #batch}
end, {'no-writes'})

-- prune(a) runs even when Redis is full (allow-oom): deleting is how a full Redis that
-- refuses writes gets its memory back (`flowkit run prune`).
-- prune(a): a[1] = cutoff: flow runs that ended (or, without an end, were created) before it
-- go   a[2] = at most this many task runs per call
-- Runs still going, or with task runs still queued, running or retrying, are kept.
-- Returns {flow runs deleted, task runs deleted, 1 if more is due now else 0}.
register('prune', function(_, args)
  local _, a = context(args)
  local cutoff, budget = tonumber(a[1]), tonumber(a[2])
  local flows, tasks, skipped = 0, 0, 0
  while budget > 0 do
    local batch = redis.call('ZRANGEBYSCORE', K.FLOW_RUNS, '-inf', cutoff, 'LIMIT', skipped, 20)
    if #batch == 0 then return {flows, tasks, 0} end
    for _, id in ipairs(batch) do
      if budget <= 0 then return {flows, tasks, 1} end
      local fr = K.flow_run(id)
      local may_go, f = prunable(id, cutoff)
      if not may_go then
        skipped = skipped + 1  -- still running, or ended recently: kept for now
      else
        local index = K.flow_run_tasks(id)
        local ids = index_range(index, 0, budget - 1)
        for _, t in ipairs(ids) do
          if redis.call('HGET', K.task_run(t), 'state') == 'crashed' then
            redis.call('LREM', K.DEAD_LETTER, 0, t)
          end
          redis.call('DEL', K.task_run(t), K.legacy_task_run_history(t), K.rq_job(t),
                     K.result(t))
        end
        index_drop_first(index, #ids)
        tasks = tasks + #ids
        budget = budget - #ids
        if redis.call('EXISTS', index) == 0 then
          redis.call('DEL', fr, K.logs(id))
          redis.call('ZREM', K.FLOW_RUNS, id)
          if f.state then redis.call('ZREM', K.flow_runs_in_state(f.state), id) end
          if f.name then redis.call('ZREM', K.flow_runs_named(f.name), id) end
          flows = flows + 1
          budget = budget - 1
        end
      end
    end
  end
  return {flows, tasks, 1}
end, {'allow-oom'})
