-- enqueue.lua: write a batch of task runs of one task and flow run (one submit or map chunk)
-- and queue the ready ones. A task run with a cache key is answered from the cache when it
-- can be; otherwise the first of several identical calls runs (the leader) and the others
-- wait for its result (single flight, cache.lua).

-- enqueue(a): a[1] = flow run id   a[2] = task name   a[3] = queue name
-- a[4] = the driver's reply stream   a[5] = tags JSON   a[6] = retries
-- a[7], a[8] = RQ job data before and after the id (a pickled call of run_task_run)
-- a[9] = now as ISO-8601 (RQ's format)   a[10] = cache expiration ms ('' = none)
-- a[11] = '1' to refresh the cache (run, never answer from it)
-- a[12] = name of the ad-hoc flow run to record first when it does not exist yet ('' = the
-- flow run exists: a flow's, or an earlier chunk's; saves a submit outside flows a round trip)
-- a[13] = '1' to close that run after this chunk (a call sent in one chunk: the run ends by
-- itself when its task runs end)
-- a[14] = what to keep of a task run that succeeds: 'full' (its record and history, until
-- retention) or 'summary' (only the flow run's counters: the record goes when it succeeds,
-- a failed one stays whole; for huge maps)
-- a[15] = '1' to remember this call (a chunk of a map's stream, which sends it again after
-- a dropped connection): a call whose first task run is remembered writes nothing again
-- then 8 values per task run (a body of '' marks the record 'big': claims leave it out): id, envelope head, envelope body ('' when the caller wrote it
-- with HSET), parameters JSON, held ('1'/'0': waits for upstream futures), upstream ids
-- (comma-separated), cache key ('' = none), cache key parts JSON.
-- Returns how many were answered from the cache.
register('enqueue', function(_, args)
  local ctx, a = context(args)
  if a[15] == '1' and not redis.call('SET', K.enqueued(a[16]), '1', 'NX', 'PX',
                                     C.ENQUEUE_MEMO_MS) then
    return 0  -- sent again (its reply was lost with the connection): it was written
  end
  local flow_run_id, name, queue = a[1], a[2], a[3]
  local fr = K.flow_run(flow_run_id)
  local pending, hits, queued_ids, index = 0, 0, {}, {}
  if a[12] ~= '' then
    create_flow_run(ctx, {id = flow_run_id, name = a[12], kind = 'adhoc', state = 'running',
                          reply_to = a[4]})
  elseif redis.call('HEXISTS', fr, 'state') == 0 then
    -- Its flow run is gone (the server lost state): counters alone would make a ghost run.
    return redis.error_reply('flowkit: flow run ' .. flow_run_id .. ' no longer exists in ' ..
      'Redis (the server restarted empty or was flushed); nothing was queued: run the flow ' ..
      'again')
  end
  -- A task run records only what differs from the usual: its reply stream when it is not
  -- its flow run's, its task name (n) when it is not the one its flow run names (that of its
  -- first task runs: a map's, all of them), tags, retries and upstream ids when there are any
  -- (a lean record is most of what a finished run costs in memory). c is created, in epoch
  -- microseconds: the record's other times count from it (the layout: transitions.lua).
  local created = us_text(ctx.us)
  local shared = {'flow_run_id', flow_run_id, 'queue', queue, 'state', 'pending', 'c', created}
  local f = redis.call('HMGET', fr, 'reply_to', 'task_name')
  if (f[1] or '') ~= a[4] then
    table.insert(shared, 'reply_to'); table.insert(shared, a[4])
  end
  if not f[2] then
    redis.call('HSET', fr, 'task_name', name)
  elseif f[2] ~= name then
    table.insert(shared, 'n'); table.insert(shared, name)
  end
  if a[5] ~= '[]' then table.insert(shared, 'tags'); table.insert(shared, a[5]) end
  if a[6] ~= '0' then table.insert(shared, 'retries'); table.insert(shared, a[6]) end
  if a[14] == 'summary' then table.insert(shared, 'keep'); table.insert(shared, 'summary') end
  -- The two records of a task run differ from one run to the next in a few values only:
  -- their field lists are built once per call and those slots filled in per run (building
  -- them anew for each run was most of the script's own cost in a 512-run chunk).
  local lean = {'p', ''}
  for _, v in ipairs(shared) do table.insert(lean, v) end
  -- What a stock RQ worker needs to run it (no description or enqueued_at: RQ does without,
  -- and they cost every task run a string and two fields).
  local job_fields = {'created_at', a[9], 'data', '', 'origin', queue, 'timeout', '-1',
                      'status', '', 'flowkit_envelope', '', 'flowkit_body', ''}
  local data_before, data_after = a[7], a[8]
  for i = 16, #a, 8 do
    local id, held, cache_key = a[i], a[i + 4], a[i + 6]
    local tr = K.task_run(id)
    local fields = lean
    if a[i + 5] ~= '' or a[i + 2] == '' then  -- (rare: a copy with the extra fields)
      fields = {unpack(lean)}
      if a[i + 5] ~= '' then table.insert(fields, 'upstream'); table.insert(fields, a[i + 5]) end
      if a[i + 2] == '' then table.insert(fields, 'big'); table.insert(fields, '1') end
    end
    fields[2] = a[i + 3]
    redis.call('HSET', tr, unpack(fields))
    index[#index + 1] = id
    local queued, value = held ~= '1', false
    if cache_key ~= '' then
      redis.call('HSET', tr, 'cache_key', cache_key, 'cache_parts', a[i + 7],
                 'cache_ttl_ms', a[10], 'cache_refresh', a[11])
      if a[11] ~= '1' then
        value = redis.call('GET', K.cache(cache_key))
        if not value and queued and not redis.call('SET', K.cache_lock(cache_key), id, 'NX',
                                                   'PX', C.CACHE_LOCK_MS) then
          redis.call('RPUSH', K.cache_waiters(cache_key), id)  -- another call computes it
          redis.call('HSET', tr, 'cache_wait', '1')
          queued = false
        end
      end
    end
    if value then
      -- Created CACHED: it never counts as pending.
      local t = {id = id, key = tr, flow_run_id = flow_run_id, queue = queue,
                 reply_to = a[4], c = created}
      answer_from_cache(ctx, t, value, 'answered from the cache (key ' .. cache_key .. ')')
      hits = hits + 1
    else
      job_fields[4] = data_before .. id .. data_after
      job_fields[10] = queued and 'queued' or 'deferred'
      job_fields[12] = a[i + 1]
      if a[i + 2] ~= '' then
        job_fields[14] = a[i + 2]
        redis.call('HSET', K.rq_job(id), unpack(job_fields))
      else  -- (its body was written beside the call, with HSET)
        redis.call('HSET', K.rq_job(id), unpack(job_fields, 1, 12))
      end
      if queued then queued_ids[#queued_ids + 1] = id end
      pending = pending + 1
    end
  end
  if #index > 0 then call_sliced('RPUSH', K.flow_run_tasks(flow_run_id), index, 1000) end
  if #queued_ids > 0 then call_sliced('RPUSH', K.queue(queue), queued_ids, 1000) end
  count(fr, 'n_pending', pending)
  count(fr, 'n_total', pending + hits)
  redis.call('SADD', K.RQ_QUEUES, K.queue(queue))
  ring(queue, #queued_ids)
  if a[13] == '1' then
    redis.call('HSET', fr, 'auto_close', '1')
    close_later(flow_run_id)
  end
  return hits
end)

-- release_held(a): queue held task runs whose upstream futures completed (the driver saw
-- them end). a = task run ids. Those no longer pending (cancelled meanwhile) stay put.
-- Returns how many were queued.
register('release_held', function(_, args)
  local _, a = context(args)
  local n = 0
  for _, id in ipairs(a) do
    local t = read(K.task_run(id), {'state', 'queue'})
    if t.state == 'pending' then
      queue_task(id, t.queue, false)
      n = n + 1
    end
  end
  return n
end)

-- fail_unstarted(a): end pending task runs that will never run, without running them (an
-- upstream failed). a[1] = state   a[2] = error type   a[3..] = pairs: task run id, message.
-- Their RQ jobs go: without the upstream's result they cannot be retried alone.
-- Returns how many were ended.
register('fail_unstarted', function(_, args)
  local ctx, a = context(args)
  local n = 0
  for i = 3, #a, 2 do
    local t = load_task(a[i])
    if t.state == 'pending' and end_task_run(ctx, t, a[1], {
        error_type = a[2], message = a[i + 1], attempt = 0, keep_job = false}) then
      n = n + 1
    end
  end
  return n
end)
