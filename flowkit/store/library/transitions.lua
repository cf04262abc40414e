-- transitions.lua: the one place a task run or flow run changes state. Every entry point
-- that moves a run calls these helpers; each checks the move against flowkit/states.py (via
-- allowed) before it writes anything, and keeps the counters, indexes, history, events,
-- replies and cache consistent the same way whoever calls it.
--
-- A task run is handled as a snapshot t = load_task(id): its fields (TASK_FIELDS) plus
-- t.id and t.key. Helpers update t.state as they go.

local TASK_FIELDS = {'state', 'attempt', 'flow_run_id', 'reply_to', 'queue', 'started',
                     'worker', 'executor', 'cache_key'}

local function load_task(id)
  local t = read(K.task_run(id), TASK_FIELDS)
  t.id, t.key = id, K.task_run(id)
  return t
end

-- The counters a move changes: the flow run's n_<state>, and the queue's running attempts.
local function count_move(t, from, to)
  local fr = K.flow_run(t.flow_run_id)
  if from then redis.call('HINCRBY', fr, 'n_' .. from, -1) end
  redis.call('HINCRBY', fr, 'n_' .. to, 1)
  if from == 'running' then
    redis.call('HINCRBY', K.queue_stats(t.queue or ''), 'running', -1)
  elseif to == 'running' then
    redis.call('HINCRBY', K.queue_stats(t.queue or ''), 'running', 1)
  end
end

-- An attempt that stops running holds no lease and is no longer being cancelled.
local function drop_lease(t)
  redis.call('ZREM', K.LEASES, t.id)
  redis.call('SREM', K.CANCELLING, t.id)
end

-- Move a flow run to `to` (its state index and event follow); `reopen` is a user's retry,
-- which may bring a terminal run back (S.REOPENED). extra: more fields to set. Returns the
-- state it left, or false when there is no such run or the move is refused.
local function move_flow_run(ctx, id, to, extra, reopen)
  local fr = K.flow_run(id)
  local cur = redis.call('HMGET', fr, 'state', 'created')
  local from = cur[1]
  if not from then return false end
  if reopen then
    if not (S.TERMINAL[from] and S.REOPENED[to]) then return false end
  elseif not allowed(from, to, 'flow run ' .. id) then
    return false
  end
  local fields = {'state', to, 'updated', ctx.ts}
  if S.TERMINAL[to] then
    table.insert(fields, 'ended'); table.insert(fields, ctx.ts)
    table.insert(fields, 'auto_close'); table.insert(fields, '0')
  end
  for _, v in ipairs(extra or {}) do table.insert(fields, v) end
  redis.call('HSET', fr, unpack(fields))
  if reopen then redis.call('HDEL', fr, 'ended') end
  redis.call('ZREM', K.flow_runs_in_state(from), id)
  redis.call('ZADD', K.flow_runs_in_state(to), tonumber(cur[2]) or ctx.now, id)
  emit(C.FLOW_RUN_EVENT, to, id, nil)
  return from
end

-- The state a flow run that closes by itself ends in: FAILED if a task run failed, else
-- CANCELLED if one was cancelled, else COMPLETED.
local function final_flow_state(c)
  for _, state in ipairs(S.FAILURE_LIST) do
    if (tonumber(c['n_' .. state]) or 0) > 0 then return 'failed' end
  end
  if (tonumber(c.n_cancelled) or 0) > 0 then return 'cancelled' end
  return 'completed'
end

-- Record a new flow run and index it (flow_run_create, and enqueue for a call's ad-hoc run).
-- f = {id, name, kind, state, parameters, tags, parent, reply_to}. False when a run with that
-- id exists already or the state is not a starting state (nothing is written).
local function create_flow_run(ctx, f)
  local fr = K.flow_run(f.id)
  if redis.call('EXISTS', fr) == 1 or not allowed(nil, f.state, 'flow run ' .. f.id) then
    return false
  end
  local fields = {'id', f.id, 'name', f.name, 'kind', f.kind, 'state', f.state, 'created', ctx.ts,
                  'started', ctx.ts, 'updated', ctx.ts, 'parameters', f.parameters or '{}',
                  'tags', f.tags or '[]', 'parent', f.parent or '', 'n_total', 0,
                  'reply_to', f.reply_to or ''}
  for _, s in ipairs(S.ALL) do table.insert(fields, 'n_' .. s); table.insert(fields, 0) end
  redis.call('HSET', fr, unpack(fields))
  redis.call('ZADD', K.FLOW_RUNS, ctx.now, f.id)
  redis.call('ZADD', K.flow_runs_in_state(f.state), ctx.now, f.id)
  redis.call('ZADD', K.flow_runs_named(f.name), ctx.now, f.id)
  emit(C.FLOW_RUN_EVENT, f.state, f.id, nil)
  return true
end

-- A flow run with no driver to end it (retried from the dashboard, or left by a driver that
-- exited with work queued) has auto_close = 1: it ends when its last task run ends.
local function close_if_done(ctx, flow_run_id)
  local fr = K.flow_run(flow_run_id)
  if redis.call('HGET', fr, 'auto_close') ~= '1' then return end
  local c = read(fr, S.CLOSE_FIELDS)
  for _, state in ipairs(S.ACTIVE_LIST) do
    if (tonumber(c['n_' .. state]) or 0) > 0 then return end
  end
  move_flow_run(ctx, flow_run_id, final_flow_state(c), nil, false)
end

local settle  -- cache.lua: stores results under cache keys, answers or hands over to waiters

-- End task run t in terminal state `to`. o (all optional): result (sealed bytes), error_type,
-- message, traceback, exception (sealed pickle), attempt and worker for the history entry,
-- started (a corrected start time), fields (more fields to set), count_worker (the finishing
-- worker's counters), keep_job = false to delete even a failed run's RQ job (not retryable).
local function end_task_run(ctx, t, to, o)
  if not allowed(t.state, to, 'task run ' .. t.id) then return false end
  local from = t.state
  local fields = {'state', to, 'ended', ctx.ts, 'updated', ctx.ts}
  local started = tonumber(o.started or t.started)
  if started then
    table.insert(fields, 'duration'); table.insert(fields, ctx.now - started)
  end
  if o.error_type then
    for _, kv in ipairs({{'error_type', o.error_type}, {'error_message', o.message or ''},
                         {'traceback', o.traceback or ''}}) do
      table.insert(fields, kv[1]); table.insert(fields, kv[2])
    end
  end
  if o.result then
    redis.call('SET', K.result(t.id), o.result, 'PX', ctx.ttl_ms)
    table.insert(fields, 'result_size'); table.insert(fields, string.len(o.result))
  end
  for _, v in ipairs(o.fields or {}) do table.insert(fields, v) end
  redis.call('HSET', t.key, unpack(fields))
  if from == 'running' then drop_lease(t) end
  count_move(t, from, to)
  append_history(t.id, {state = to, ts = ctx.now, attempt = o.attempt or tonumber(t.attempt) or 0,
                        worker = o.worker, error_type = o.error_type, message = o.message})
  local failure = S.FAILURE[to]
  if from == 'running' then  -- finished attempts per minute, for the queues page
    local stats, minute = K.queue_stats(t.queue or ''), math.floor(ctx.now / 60)
    redis.call('HDEL', stats, 'done:' .. (minute - 60), 'failed:' .. (minute - 60))
    if S.SUCCESS[to] or failure then
      redis.call('HINCRBY', stats, (failure and 'failed:' or 'done:') .. minute, 1)
    end
    if o.count_worker and t.worker then
      redis.call('HINCRBY', K.worker(t.worker), failure and 'tasks_failed' or 'tasks_done', 1)
    end
  end
  if failure and o.keep_job ~= false then
    -- Kept (expiring with the result) so that the run can be retried from the dashboard.
    redis.call('HSET', K.rq_job(t.id), 'status', 'failed')
    redis.call('PEXPIRE', K.rq_job(t.id), ctx.ttl_ms)
  else
    redis.call('DEL', K.rq_job(t.id))
  end
  local msg = {'kind', 'done', 'id', t.id, 'state', to}
  if o.result and string.len(o.result) <= ctx.inline then
    table.insert(msg, 'result'); table.insert(msg, o.result)
  end
  if o.error_type then
    for _, kv in ipairs({{'error_type', o.error_type}, {'error_message', o.message or ''},
                         {'traceback', o.traceback or ''}, {'exception', o.exception or ''}}) do
      table.insert(msg, kv[1]); table.insert(msg, kv[2])
    end
  end
  reply(t.reply_to, msg)
  emit(C.TASK_RUN_EVENT, to, t.id, t.flow_run_id)
  t.state = to
  if t.cache_key and t.cache_key ~= '' then settle(ctx, t, to, o.result) end
  close_if_done(ctx, t.flow_run_id)
  return true
end

-- A running attempt failed and another follows after `delay` seconds: the task run waits
-- RETRYING in K.RETRIES_DUE (holding no executor), or goes straight back to the FRONT of its
-- queue: a retry or crash re-run was due already, and behind a long backlog a 2 s delay would
-- become minutes (promote in reap.lua puts due delayed retries at the front too).
-- o: outcome (the failed attempt's state for the history entry), error_type, message,
-- traceback, worker.
local function schedule_attempt(ctx, t, delay, o)
  if not allowed(t.state, 'retrying', 'task run ' .. t.id) then return false end
  redis.call('HSET', t.key, 'state', 'retrying', 'updated', ctx.ts,
             'error_type', o.error_type or '', 'error_message', o.message or '',
             'traceback', o.traceback or '')
  drop_lease(t)
  count_move(t, t.state, 'retrying')
  append_history(t.id, {state = o.outcome, ts = ctx.now, attempt = tonumber(t.attempt),
                        worker = o.worker, error_type = o.error_type, message = o.message,
                        retry_in = delay})
  if delay > 0 then
    redis.call('HSET', K.rq_job(t.id), 'status', 'scheduled')
    redis.call('ZADD', K.RETRIES_DUE, ctx.now + delay, t.id)
  else
    queue_task(t.id, t.queue, true)
  end
  emit(C.TASK_RUN_EVENT, 'retrying', t.id, t.flow_run_id)
  t.state = 'retrying'
  return true
end

-- Undo the claim of a task run its executor never started: PENDING again at the front of its
-- queue, with the attempt number, the 'running' history entry and the counters taken back,
-- as if never claimed. The caller took it off the processing list. With `message`, a history
-- entry says why it was given back.
local function give_back(ctx, t, message)
  if not allowed(t.state, 'pending', 'task run ' .. t.id) then return false end
  redis.call('HINCRBY', t.key, 'attempt', -1)
  redis.call('HSET', t.key, 'state', 'pending', 'updated', ctx.ts)
  redis.call('HDEL', t.key, 'started', 'worker', 'executor')
  redis.call('RPOP', K.task_run_history(t.id))
  drop_lease(t)
  count_move(t, 'running', 'pending')
  if message then
    append_history(t.id, {state = 'pending', ts = ctx.now, attempt = tonumber(t.attempt) - 1,
                          worker = t.worker, message = message})
  end
  queue_task(t.id, t.queue, true)
  emit(C.TASK_RUN_EVENT, 'pending', t.id, t.flow_run_id)
  t.state = 'pending'
  return true
end

-- Mark a claimed task run running: attempt + 1, lease until now + lease_seconds.
local function start_attempt(ctx, t, worker, executor, lease_seconds)
  if not allowed(t.state, 'running', 'task run ' .. t.id) then return false end
  local attempt = redis.call('HINCRBY', t.key, 'attempt', 1)
  redis.call('HSET', t.key, 'state', 'running', 'started', ctx.ts, 'worker', worker,
             'updated', ctx.ts, 'executor', executor)
  redis.call('ZADD', K.LEASES, ctx.now + lease_seconds, t.id)
  count_move(t, t.state, 'running')
  append_history(t.id, {state = 'running', ts = ctx.now, attempt = attempt, worker = worker})
  redis.call('HSET', K.rq_job(t.id), 'status', 'started', 'worker_name', worker)
  emit(C.TASK_RUN_EVENT, 'running', t.id, t.flow_run_id)
  t.state, t.attempt, t.worker, t.started = 'running', attempt, worker, ctx.ts
  return attempt
end

-- End task run t CACHED with a result someone else computed (a cache hit or the single-flight
-- leader); its body never runs.
local function answer_from_cache(ctx, t, value, message)
  redis.call('HDEL', t.key, 'cache_wait')
  return end_task_run(ctx, t, 'cached', {
    result = value, attempt = 0, message = message, started = ctx.now,
    fields = {'started', ctx.ts, 'cache_hit', '1'}})
end

-- A user's retry of a failed task run: PENDING again and queued, its crash count reset.
local function reopen_task(ctx, t, message)
  if not (S.TERMINAL[t.state] and S.REOPENED.pending) then return false end
  redis.call('HSET', t.key, 'state', 'pending', 'updated', ctx.ts, 'crashes', 0)
  redis.call('HDEL', t.key, 'ended', 'duration')
  append_history(t.id, {state = 'pending', ts = ctx.now, attempt = tonumber(t.attempt),
                        message = message})
  count_move(t, t.state, 'pending')
  queue_task(t.id, t.queue, false)
  emit(C.TASK_RUN_EVENT, 'pending', t.id, t.flow_run_id)
  t.state = 'pending'
  return true
end
