-- drivers.lua: drivers' heartbeats, judged by the Redis server's clock (TIME), and the end of
-- the flow runs of a driver that went silent: no run stays 'running' after its driver is gone.
-- A driver's hash K.driver(id) holds label (host and pid), tolerance and runs (its open flow
-- runs, comma-separated); K.DRIVERS scores each driver by its deadline.

local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- driver_beat(a): a driver is alive. a[1] = driver id   a[2] = label ("host pid N")
-- a[3] = its partition tolerance in seconds   a[4..] = the flow runs it has open
-- The deadline is the server's time plus the tolerance. Returns the ids among a[4..] that
-- have ended or no longer exist: the driver stops sending them.
register('driver_beat', function(_, args)
  local _, a = context(args)
  local id = a[1]
  redis.call('ZADD', K.DRIVERS, server_now() + tonumber(a[3]), id)
  local open, ended = {}, {}
  for i = 4, #a do
    -- A run not written yet (its submit's enqueue is still on the way) counts as open:
    -- dropping it here would leave it uncovered for good once it exists.
    local state = redis.call('HGET', K.flow_run(a[i]), 'state')
    if state and S.TERMINAL[state] then
      table.insert(ended, a[i])
    else
      table.insert(open, a[i])
    end
  end
  redis.call('HSET', K.driver(id), 'label', a[2], 'tolerance', a[3],
             'runs', table.concat(open, ','))
  return ended
end)

-- drivers_lost(a): drivers past their deadline, at most a[1] of them.
-- Returns a flat list {driver id, runs (comma-separated), ...}.
register('drivers_lost', function(_, args)
  local _, a = context(args)
  local out = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.DRIVERS, '-inf', server_now(),
                                 'LIMIT', 0, tonumber(a[1]))) do
    table.insert(out, id)
    table.insert(out, redis.call('HGET', K.driver(id), 'runs') or '')
  end
  return out
end)

-- driver_run_lost(a): end one flow run of a lost driver, if the driver is still past its
-- deadline and the run still active: the run ends CRASHED "driver lost: <label> ...", and its
-- driver, should it come back, is told to stop the flow function. Its task runs are not
-- touched here: the caller cancels them in bounded chunks (task_runs.cancel), so a lost
-- driver's 100k-task run never blocks the server. a[1] = driver id   a[2] = flow run id
-- Returns {1, message} when the run was ended (now, or by an earlier pass that may not have
-- cancelled everything: cancelling again is harmless), else {0, ''}.
register('driver_run_lost', function(_, args)
  local ctx, a = context(args)
  local deadline = tonumber(redis.call('ZSCORE', K.DRIVERS, a[1]))
  if not deadline or deadline > server_now() then return {0, ''} end
  local d = read(K.driver(a[1]), {'label', 'tolerance'})
  local message = 'driver lost: ' .. (d.label or a[1]) .. ' sent no heartbeat for more than ' ..
                  (d.tolerance or '?') .. ' s (FLOWKIT_PARTITION_TOLERANCE_SECONDS)'
  local flow_run_id = a[2]
  local fr = K.flow_run(flow_run_id)
  local driver = redis.call('HGET', fr, 'reply_to')
  if move_flow_run(ctx, flow_run_id, 'crashed', {'error_type', C.ERROR_TYPES.driver_lost,
                                                 'error_message', message}, false) then
    -- A driver that comes back after all stops its flow function (as after a cancel).
    reply(driver, {'kind', 'cancel_flow', 'id', flow_run_id, 'message', message})
    return {1, message}
  end
  -- Ended already by an earlier pass that stopped before cancelling everything: again.
  local r = read(fr, {'state', 'error_type', 'error_message'})
  if r.state == 'crashed' and r.error_type == C.ERROR_TYPES.driver_lost then
    return {1, r.error_message or message}
  end
  return {0, ''}
end)

-- driver_forget(a): drop a driver's heartbeat. a[1] = driver id   a[2] = '1': only if it is
-- still past its deadline (a lost driver whose runs were ended), '0': at once (a clean exit).
-- Its reply stream expires after the result ttl instead of growing with no reader.
-- Returns 1 when it was forgotten.
register('driver_forget', function(_, args)
  local ctx, a = context(args)
  if a[2] == '1' then
    local deadline = tonumber(redis.call('ZSCORE', K.DRIVERS, a[1]))
    if not deadline or deadline > server_now() then return 0 end
  end
  redis.call('ZREM', K.DRIVERS, a[1])
  redis.call('DEL', K.driver(a[1]))
  redis.call('PEXPIRE', K.reply(a[1]), ctx.ttl_ms)
  return 1
end)

-- adhoc_discard(a): remove an ad-hoc flow run that a failed submit created and that holds no
-- task run, so that nothing empty is left behind. a[1] = flow run id
-- Returns 1 when it was removed.
register('adhoc_discard', function(_, args)
  local _, a = context(args)
  local id = a[1]
  local fr = K.flow_run(id)
  local r = read(fr, {'kind', 'state', 'name', 'n_total'})
  if r.kind ~= 'adhoc' or (tonumber(r.n_total) or 0) > 0
     or index_len(K.flow_run_tasks(id)) > 0 then
    return 0
  end
  redis.call('DEL', fr, K.logs(id))
  redis.call('ZREM', K.FLOW_RUNS, id)
  redis.call('ZREM', K.flow_runs_in_state(r.state or ''), id)
  redis.call('ZREM', K.flow_runs_named(r.name or ''), id)
  return 1
end)
