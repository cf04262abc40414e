-- attempts.lua: what executors do with the runs they take: claim, finish, give back.

-- A batched claim starts later than it was claimed: record the real start, `delay` seconds
-- after the claim, in b (which implies the 'running' entry), or for a record claimed before
-- the compact layout in 'started' and the 'running' entry the claim wrote (the last one,
-- rebuilt from what the record holds: no read). Adds to `fields`, the HSET the finish makes.
local function correct_start(t, delay, fields)
  if t.b then
    t.b = us_text(tonumber(t.b) + math.floor(delay * 1000000 + 0.5))
    table.insert(fields, 'b'); table.insert(fields, t.b)
    return
  end
  local started = string.format('%.6f', tonumber(t.started) + delay)
  t.started = started
  table.insert(fields, 'started'); table.insert(fields, started)
  local n = tonumber(t.hn)
  if n then
    table.insert(fields, h_field(n))
    table.insert(fields, history_entry({state = 'running', ts = started, attempt = t.attempt,
                                        worker = t.worker}))
  end
end

-- claim(a): claim up to a[4] task runs for an executor and mark them running.
-- a[1] = worker id   a[2] = executor id   a[3] = lease seconds   a[4] = how many at most
-- a[5] = this claim's token ('' = none): a claim sent again with the token of the
--        executor's last claim (its reply was lost) answers with the task runs that claim took,
--        still running here, and takes no more (bodies too large for the claim reply are
--        marked 'big' when enqueued; the caller fetches them)
-- a[6] = id already taken by a blocking pop onto the processing list ('' for none)
-- a[7] = '1' when that id still has to be pushed onto the processing list (a stock RQ
--        worker popped it)
-- a[8..] = queue names in priority order
-- Returns a list of {id, envelope head, envelope body (false: too large), attempt,
-- flow_run_id, reply_to}. Ids that are neither pending nor retrying (cancelled, finished)
-- are dropped and skipped, at most C.CLAIM_SKIP_MAX of them per call (a cancelled run may
-- have left thousands queued): past that the call ends with what it has and rings the
-- queue's bell, so that the next claim carries on. Ids are popped from a queue several at a
-- time and pushed onto the processing list together.
register('claim', function(_, args)
  local ctx, a = context(args)
  local worker, executor, lease, limit = a[1], a[2], tonumber(a[3]), tonumber(a[4])
  local processing = K.processing(executor)
  local claims, skipped, taken = {}, 0, {}
  local token, memo = a[5], K.last_claim(executor)

  local function answer(t)  -- the claim entry of a task run this claim holds
    local job = K.rq_job(t.id)
    local head, body
    -- A large body is left for the executor to fetch with HGET: through Lua it would be
    -- copied twice more inside the server.
    if t.big then
      head, body = redis.call('HGET', job, 'flowkit_envelope'), false
    else
      local envelope = redis.call('HMGET', job, 'flowkit_envelope', 'flowkit_body')
      head, body = envelope[1], envelope[2] or ''
    end
    table.insert(claims, {t.id, head or '', body, tonumber(t.attempt), t.flow_run_id,
                          reply_stream(t) or ''})
  end

  if token ~= '' then
    local last = redis.call('GET', memo)
    if last and string.sub(last, 1, #token + 1) == token .. '|' then  -- sent again
      for id in string.gmatch(string.sub(last, #token + 2), '[^,]+') do
        local t = load_task(id)
        if t.state == 'running' and t.worker == worker and t.executor == executor then
          answer(t)
        end
      end
      return claims
    end
  end

  local function take(id)
    local t = load_task(id, CLAIM_FIELDS)
    if t.state ~= 'pending' and t.state ~= 'retrying' then
      skipped = skipped + 1
      return false
    end
    if not start_attempt(ctx, t, worker, executor, lease) then return false end
    answer(t)
    return true
  end

  if a[6] ~= '' then
    if a[7] == '1' then redis.call('RPUSH', processing, a[6]) end
    if not take(a[6]) then redis.call('LREM', processing, 0, a[6]) end
  end
  local qi = 8
  while #claims < limit and qi <= #a do
    if skipped >= C.CLAIM_SKIP_MAX then
      ring(a[qi], 1)  -- ended ids still ahead: wake an executor to carry on
      break
    end
    local want = limit - #claims
    local ids = redis.call('LPOP', K.queue(a[qi]), want)
    if ids then
      for _, id in ipairs(ids) do
        if take(id) then table.insert(taken, id) end
      end
    end
    if not ids or #ids < want then
      redis.call('DEL', K.bell(a[qi]))  -- the queue is empty: its tokens would wake for nothing
      qi = qi + 1
    end
  end
  if #taken > 0 then call_sliced('RPUSH', processing, taken, 500) end
  if token ~= '' and #claims > 0 then  -- (a repeat of a claim that took nothing may take)
    local ids = {}
    for i, c in ipairs(claims) do ids[i] = c[1] end
    redis.call('SET', memo, token .. '|' .. table.concat(ids, ','), 'PX', C.CLAIM_MEMO_MS)
  end
  return claims
end)

-- Whether this worker already recorded this outcome of this attempt (the executor repeats a
-- finish whose reply it lost): then a refusal is no news. A plain end is implied by e.
local function recorded_before(t, attempt, state, worker)
  if redis.call('HEXISTS', t.key, 'e') == 1 and tostring(t.attempt) == attempt and t.state == state and t.worker == worker then
    return true
  end
  local n = tonumber(t.hn) or 0
  if n == 0 then return false end
  local names = {}
  for i = 1, n do names[i] = h_field(i) end
  local entries = redis.call('HMGET', t.key, unpack(names))
  local holder = nil  -- the worker of the attempt's 'running' entry
  for _, raw in ipairs(entries) do
    if raw then
      local h = cjson.decode(raw)
      if tostring(h[3]) == attempt then
        if h[1] == 'running' then holder = h[4] end
        local by = (h[4] ~= nil and h[4] ~= '') and h[4] or holder
        if h[1] == state and by == worker then return true end
      end
    end
  end
  return false
end

-- A stale attempt's outcome was refused by the fence: say so, once, in the run's log stream
-- (and to its driver), naming the task run and both attempts. Returns the line.
local function log_refusal(ctx, t, attempt, worker)
  local line = 'stale result refused: task run ' .. t.id .. ' attempt ' .. attempt ..
    ' (worker ' .. worker .. ') finished after the task run had moved on to attempt ' ..
    tostring(t.attempt) .. ' (' .. tostring(t.state) .. ', worker ' .. tostring(t.worker) ..
    '); its outcome was discarded (the worker was frozen or cut off past its lease)'
  local fields = {'ts', ctx.ts, 'level', 'WARNING', 'message', line, 'task_run_id', t.id,
                  'name', task_name(t)}
  if t.flow_run_id then
    redis.call('XADD', K.logs(t.flow_run_id), 'MAXLEN', '~', C.LOGS_MAXLEN, '*', unpack(fields))
  end
  local echo = {'kind', 'log'}
  for _, v in ipairs(fields) do table.insert(echo, v) end
  reply(t.reply_to, echo)
  return line
end

-- finish(a): record the outcomes of attempts, each fenced by its attempt number (a stale
-- attempt, one the reaper already ended, writes nothing but one log line, see log_refusal).
-- a[1] = executor id   a[2] = worker id
-- then 10 values per outcome: task run id, attempt, state ('completed', 'failed',
-- 'timed_out'), sealed result ('' = none), error type ('' = none), error message,
-- traceback, sealed exception pickle, retry delay seconds ('' = no retry), how many seconds
-- after its claim the attempt really started ('' = as claimed; a batched claim starts later
-- than it was claimed). A delay, not a time: the executor's clock may be off from the server's.
-- Returns {how many outcomes were recorded, then the log line of each refused one}.
register('finish', function(_, args)
  local ctx, a = context(args)
  local processing, worker = K.processing(a[1]), a[2]
  local recorded, out, seen = 0, {0}, {}
  for i = 3, #a, 10 do
    local id, attempt, state, started = a[i], a[i + 1], a[i + 2], a[i + 9]
    table.insert(seen, id)
    local t = load_task(id, FINISH_FIELDS)
    if t.state == 'running' and t.attempt == attempt then
      local fields = {}
      if started ~= '' and (t.b or t.started) then correct_start(t, tonumber(started), fields) end
      local err = a[i + 4] ~= '' and a[i + 4] or nil
      if a[i + 8] ~= '' then
        if #fields > 0 then redis.call('HSET', t.key, unpack(fields)) end
        schedule_attempt(ctx, t, tonumber(a[i + 8]), {
          outcome = state, error_type = err, message = a[i + 5], traceback = a[i + 6],
          worker = worker})
      else
        end_task_run(ctx, t, state, {
          result = a[i + 3] ~= '' and a[i + 3] or nil, error_type = err,
          message = err and a[i + 5], traceback = a[i + 6], exception = a[i + 7],
          worker = worker, count_worker = true, fields = fields})
      end
      recorded = recorded + 1
    elseif t.state and not recorded_before(t, attempt, state, worker) then
      table.insert(out, log_refusal(ctx, t, attempt, worker))
    end
  end
  -- Off the processing list: usually its head, in the order claimed (one LRANGE and one
  -- LTRIM for the whole batch); otherwise one LREM per id.
  local head = redis.call('LRANGE', processing, 0, #seen - 1)
  local in_order = #head == #seen
  for j = 1, #seen do
    if head[j] ~= seen[j] then in_order = false; break end
  end
  if in_order then
    redis.call('LTRIM', processing, #seen, -1)
  else
    for _, id in ipairs(seen) do redis.call('LREM', processing, 0, id) end
  end
  out[1] = recorded
  return out
end)

-- release(a): give back claimed task runs an executor has not started (its batch runs slow,
-- or it is shutting down): to the front of their queues, as if never claimed (those flagged
-- for cancellation end CANCELLED instead, see return_unstarted).
-- a[1] = worker id   a[2] = executor id   a[3..] = task run ids, in the order claimed.
-- Returns how many were given back.
register('release', function(_, args)
  local ctx, a = context(args)
  local processing, n = K.processing(a[2]), 0
  for i = #a, 3, -1 do
    local t = load_task(a[i])
    if t.state == 'running' and t.worker == a[1] and redis.call('LREM', processing, 0, t.id) > 0
       and return_unstarted(ctx, t, nil) then
      n = n + 1
    end
  end
  return n
end)

-- renew(a): extend the leases of the attempts a worker holds (called by its supervisor).
-- a[1] = worker id   a[2] = lease seconds: the new deadline is the server's now + this
-- a[3] = how many of the ids that follow are running right now (they come first)
-- a[4..] = task run ids in the worker's processing lists
-- Only attempts still running on this worker are renewed; a lease the reaper already
-- collected is not brought back (ZADD XX). The attempts running right now are marked
-- 'in_hand' (with their attempt number): if the whole worker dies, only they count as
-- crashed (reap.lua), not what its executors had claimed and not started.
-- Returns how many leases were extended.
register('renew', function(_, args)
  local ctx, a = context(args)
  local n, in_hand, deadline = 0, tonumber(a[3]), ctx.now + tonumber(a[2])
  for i = 4, #a do
    local tr = K.task_run(a[i])
    local f = redis.call('HMGET', tr, 'state', 'attempt', 'w', 'x', 'worker')
    if f[1] == 'running' and (holder_of(f[3], f[4]) or f[5]) == a[1] then
      n = n + redis.call('ZADD', K.LEASES, 'XX', 'CH', deadline, a[i])
      if i < 4 + in_hand then redis.call('HSET', tr, 'in_hand', f[2]) end
    end
  end
  return n
end)
