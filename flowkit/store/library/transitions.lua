-- transitions.lua: the one place a task run or flow run changes state. Every entry point
-- that moves a run calls these helpers; each checks the move against flowkit/states.py (via
-- allowed) before it writes anything, and keeps the counters, indexes, history, events,
-- replies and cache consistent the same way whoever calls it.
--
-- A task run is handled as a snapshot t = load_task(id): its fields (TASK_FIELDS) plus
-- t.id and t.key. Helpers update t.state as they go.

-- The record's layout (flowkit/store/task_records.py reads it): enqueue writes p
-- (parameters), flow_run_id, n (the task name, when not its flow run's task_name), queue,
-- state and c (created, epoch microseconds); a claim writes attempt, w (and maybe x: who
-- holds it, see holder_fields)
-- and b (the attempt's start, microseconds after c); a plain end writes e (the attempt's
-- length in microseconds). b and e imply the attempt's history entries (base.lua's
-- write_out_implied). Records written before this layout have 'started' (epoch seconds,
-- with their 'running' entry written out), 'worker' and 'executor' instead of b, w and x,
-- and no c: they are read as such.
--
-- The fields a transition reads. hn: history entries so far; big: the call body is stored
-- apart (too large to pass through Lua); cancel_requested: flagged for cancellation.
-- reply_to is kept on a task run only when it is not its flow run's (reply_stream).
local TASK_FIELDS = {'state', 'attempt', 'flow_run_id', 'reply_to', 'queue', 'c', 'b', 'e',
                     'started', 'w', 'x', 'worker', 'executor', 'cache_key', 'hn', 'big',
                     'cancel_requested', 'keep'}
-- What a claim and a finish read (each field read costs: these run once per task).
local CLAIM_FIELDS = {'state', 'attempt', 'flow_run_id', 'reply_to', 'queue', 'c', 'hn', 'big'}
local FINISH_FIELDS = {'state', 'attempt', 'flow_run_id', 'reply_to', 'queue', 'c', 'b',
                       'started', 'w', 'x', 'worker', 'cache_key', 'hn', 'cancel_requested',
                       'keep'}

-- Who holds an attempt, as its record names it: w = the executor's id alone when that is
-- '<worker>.<digits>' (flowkit's executors are named so: the worker is implied), otherwise
-- w = the worker and x = the executor. Built once per call (a claim's runs share it).
local function holder_fields(worker, executor)
  local memo = W.holder_fields
  if memo and memo[1] == worker and memo[2] == executor then return memo[3] end
  local fields = {'w', worker, 'x', executor}
  local n = #worker
  if string.sub(executor, 1, n + 1) == worker .. '.' and
     string.find(executor, '^%d+$', n + 2) then
    fields = {'w', executor}
  end
  W.holder_fields = {worker, executor, fields}
  return fields
end

-- The worker and executor of record fields w and x (holder_fields), or nil, nil when there
-- are none. The worker of a lone w is built once per call.
local function holder_of(w, x)
  if not w then return nil, nil end
  if x then return w, x end
  local memo = W.holder_of
  if memo and memo[1] == w then return memo[2], w end
  local worker = string.match(w, '^(.*)%.%d+$') or w
  W.holder_of = {w, worker}
  return worker, w
end

local function load_task(id, names)
  local key = K.task_run(id)
  local t = read(key, names or TASK_FIELDS)
  t.id, t.key = id, key
  if t.w then t.worker, t.executor = holder_of(t.w, t.x) end
  return t
end

-- Task run t's task name: n, else its flow run's task_name ('task_name' in records written
-- before the compact layout).
local function task_name(t)
  local f = redis.call('HMGET', t.key, 'n', 'task_name')
  if f[1] or f[2] then return f[1] or f[2] end
  if not t.flow_run_id then return '' end
  return redis.call('HGET', K.flow_run(t.flow_run_id), 'task_name') or ''
end

-- The driver stream a task run's outcome goes to: its own, else its flow run's (read once
-- per flow run and call).
local function reply_stream(t)
  if t.reply_to then return t.reply_to end
  local fr = t.flow_run_id
  if not fr then return nil end
  local stream = W.reply_of[fr]
  if stream == nil then
    stream = redis.call('HGET', K.flow_run(fr), 'reply_to') or false
    W.reply_of[fr] = stream
  end
  return stream or nil
end

-- The counters a move changes: the flow run's n_<state>, and the queue's running attempts
-- (written once per call, see count in base.lua).
local function count_move(t, from, to)
  local fr = memo_key(K.flow_run, t.flow_run_id)
  if from then count(fr, n_field(from), -1) end
  count(fr, n_field(to), 1)
  if from == 'running' then
    count(memo_key(K.queue_stats, t.queue or ''), 'running', -1)
  elseif to == 'running' then
    count(memo_key(K.queue_stats, t.queue or ''), 'running', 1)
  end
end

-- An attempt that stops running holds no lease and is no longer being cancelled.
local function drop_lease(t)
  set_lease(t.id, false)
  if t.cancel_requested then redis.call('SREM', K.CANCELLING, t.id) end
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
close_if_done = function(ctx, flow_run_id)
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
-- fields (more fields to set), count_worker (the finishing
-- worker's counters), keep_job = false to delete even a failed run's RQ job (not retryable).
-- One HSET of the record (state, end or history entry); the result, the RQ job and the reply
-- take a command each; counters, the event and the lease go with the call's (flush_writes).
local function end_task_run(ctx, t, to, o)
  if not allowed(t.state, to, 'task run ' .. t.id) then return false end
  local from = t.state
  -- keep = 'summary' (a huge map's choice): a run that succeeds leaves only the counters;
  -- its result goes to the driver in the reply (stored only when too large for it).
  local summary = t.keep == 'summary' and S.SUCCESS[to] and not (t.cache_key and t.cache_key ~= '')
  -- A plain end (its own worker, no error, no message) only records its length: with b,
  -- that implies the attempt's two history entries.
  local plain = from == 'running' and t.b and not o.error_type and not o.message and
                (not o.worker or o.worker == t.worker) and
                (not o.attempt or tostring(o.attempt) == tostring(t.attempt))
  local fields = {'state', to}
  if o.error_type then
    for _, kv in ipairs({{'error_type', o.error_type}, {'error_message', o.message or ''},
                         {'traceback', o.traceback or ''}}) do
      table.insert(fields, kv[1]); table.insert(fields, kv[2])
    end
  end
  -- A small result (a number, a short string) lives in the record: no key, no command of
  -- its own, less memory than a key of its own for its ttl. A larger one gets its key (and
  -- the ttl); flowkit/store/task_runs.py read_result looks in both.
  if o.result and not (summary and string.len(o.result) <= ctx.inline) then
    if string.len(o.result) <= C.RECORD_RESULT_BYTES and not summary then
      table.insert(fields, 'result'); table.insert(fields, o.result)
    else
      redis.call('SET', K.result(t.id), o.result, 'PX', ctx.ttl_ms)
      table.insert(fields, 'result_size'); table.insert(fields, string.len(o.result))
    end
  end
  if summary then
    redis.call('DEL', t.key)
  else
    for _, v in ipairs(o.fields or {}) do table.insert(fields, v) end
    local at = since_created(ctx, t)
    if plain then
      table.insert(fields, 'e'); table.insert(fields, us_text(math.max(0, at - tonumber(t.b))))
    else
      -- The worker is named in the history entry only when it is not the attempt's own.
      local worker = o.worker
      if worker and worker == t.worker and from == 'running' then worker = nil end
      add_history(t, fields, {state = to, ts = at, attempt = o.attempt or t.attempt or 0,
                              worker = worker, error_type = o.error_type, message = o.message})
    end
    t.state = to  -- (an end written out later is of this state)
    save(t, fields)
  end
  if from == 'running' then drop_lease(t) end
  count_move(t, from, to)
  local failure = S.FAILURE[to]
  if from == 'running' then  -- finished attempts per minute, for the queues page
    local stats = memo_key(K.queue_stats, t.queue or '')
    local minute = W.minute
    if not minute then  -- the minute's counter names, built once per call
      local m = math.floor(ctx.now / 60)
      minute = {done = 'done:' .. m, failed = 'failed:' .. m,
                stale = {'done:' .. (m - 60), 'failed:' .. (m - 60)}, cleared = {}}
      W.minute = minute
    end
    if not minute.cleared[stats] then  -- one stale minute dropped per queue and call
      minute.cleared[stats] = true
      redis.call('HDEL', stats, minute.stale[1], minute.stale[2])
    end
    if S.SUCCESS[to] or failure then
      count(stats, failure and minute.failed or minute.done, 1)
    end
    if o.count_worker and t.worker then
      count(memo_key(K.worker, t.worker), failure and 'tasks_failed' or 'tasks_done', 1)
    end
  end
  if failure and o.keep_job ~= false then
    -- Kept (expiring with the result) so that the run can be retried from the dashboard.
    redis.call('HSET', K.rq_job(t.id), 'status', 'failed')
    redis.call('PEXPIRE', K.rq_job(t.id), ctx.ttl_ms)
  else
    redis.call('DEL', K.rq_job(t.id))
  end
  local msg = {'id', t.id, 'state', to}
  if o.result and string.len(o.result) <= ctx.inline then
    table.insert(msg, 'result'); table.insert(msg, o.result)
  end
  if o.error_type then
    for _, kv in ipairs({{'error_type', o.error_type}, {'error_message', o.message or ''},
                         {'traceback', o.traceback or ''}, {'exception', o.exception or ''}}) do
      table.insert(msg, kv[1]); table.insert(msg, kv[2])
    end
  end
  reply_done(reply_stream(t), msg)
  emit(C.TASK_RUN_EVENT, to, t.id, t.flow_run_id)
  t.state = to
  if t.cache_key and t.cache_key ~= '' then settle(ctx, t, to, o.result) end
  close_later(t.flow_run_id)
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
  local fields = {'state', 'retrying', 'error_type', o.error_type or '',
                  'error_message', o.message or '', 'traceback', o.traceback or ''}
  add_history(t, fields, {state = o.outcome, ts = since_created(ctx, t), attempt = t.attempt,
                          worker = o.worker, error_type = o.error_type, message = o.message,
                          retry_in = delay})
  save(t, fields)
  drop_lease(t)
  count_move(t, t.state, 'retrying')
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
  local fields = {'state', 'pending', 'attempt', tonumber(t.attempt) - 1}
  if t.b then  -- its 'running' entry is implied: it goes with b
    redis.call('HDEL', t.key, 'b', 'w', 'x')
    t.b = nil
  else  -- recorded before the compact layout: its 'running' entry is the last one
    local n = tonumber(t.hn) or 0
    redis.call('HDEL', t.key, 'started', 'worker', 'executor', h_field(n))
    t.hn = math.max(n - 1, 0)
    if not message then table.insert(fields, 'hn'); table.insert(fields, t.hn) end
  end
  if message then
    add_history(t, fields, {state = 'pending', ts = since_created(ctx, t),
                            attempt = tonumber(t.attempt) - 1, worker = t.worker,
                            message = message})
  end
  redis.call('HSET', t.key, unpack(fields))
  drop_lease(t)
  count_move(t, 'running', 'pending')
  queue_task(t.id, t.queue, true)
  emit(C.TASK_RUN_EVENT, 'pending', t.id, t.flow_run_id)
  t.state = 'pending'
  return true
end

-- A claimed task run that was never started goes back: to its queue, as if never claimed
-- (give_back), or, when it was flagged for cancellation meanwhile (the cancel told its caller
-- it is being stopped), it ends CANCELLED here instead of running after all.
local function return_unstarted(ctx, t, message)
  if t.cancel_requested then
    return end_task_run(ctx, t, 'cancelled', {
      error_type = C.ERROR_TYPES.cancelled, worker = t.worker,
      message = 'cancelled before it started (claimed by worker ' .. (t.worker or '?') .. ')'})
  end
  return give_back(ctx, t, message)
end

-- Mark a claimed task run running: attempt + 1, lease until now + lease_seconds. One HSET
-- of the record (state, attempt, start, worker, executor); the lease, counters and the event
-- go with the call's (flush_writes).
local function start_attempt(ctx, t, worker, executor, lease_seconds)
  if not allowed(t.state, 'running', 'task run ' .. t.id) then return false end
  local attempt = (tonumber(t.attempt) or 0) + 1
  -- Its 'running' history entry is implied by b, attempt and worker (write_out_implied).
  local b = us_text(since_created(ctx, t))
  redis.call('HSET', t.key, 'state', 'running', 'attempt', attempt, 'b', b,
             unpack(holder_fields(worker, executor)))
  set_lease(t.id, ctx.now + lease_seconds)
  count_move(t, t.state, 'running')
  emit(C.TASK_RUN_EVENT, 'running', t.id, t.flow_run_id)
  t.state, t.attempt, t.worker, t.b = 'running', tostring(attempt), worker, b
  t.executor = executor
  return attempt
end

-- End task run t CACHED with a result someone else computed (a cache hit or the single-flight
-- leader); its body never runs.
local function answer_from_cache(ctx, t, value, message)
  redis.call('HDEL', t.key, 'cache_wait')
  return end_task_run(ctx, t, 'cached', {
    result = value, attempt = 0, message = message, fields = {'cache_hit', '1'}})
end

-- A user's retry of a failed task run: PENDING again and queued, its crash count reset.
local function reopen_task(ctx, t, message)
  if not (S.TERMINAL[t.state] and S.REOPENED.pending) then return false end
  local fields = {'state', 'pending', 'crashes', 0}
  add_history(t, fields, {state = 'pending', ts = since_created(ctx, t), attempt = t.attempt,
                          message = message})
  save(t, fields)
  redis.call('HDEL', t.key, 'ended', 'cancel_requested')
  count_move(t, t.state, 'pending')
  queue_task(t.id, t.queue, false)
  emit(C.TASK_RUN_EVENT, 'pending', t.id, t.flow_run_id)
  t.state = 'pending'
  return true
end
