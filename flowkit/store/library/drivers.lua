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
    local state = redis.call('HGET', K.flow_run(a[i]), 'state')
    if state and not S.TERMINAL[state] then
      table.insert(open, a[i])
    else
      table.insert(ended, a[i])
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
-- deadline and the run still active: the run ends CRASHED "driver lost: <label> ...", its
-- queued and waiting task runs end CANCELLED, its running ones are flagged for their
-- supervisors to kill (as cancel does). Cancelled ids stay in their queue list and claim
-- skips them: the work is linear in the run's task runs, not in the queue's length.
-- a[1] = driver id   a[2] = flow run id
-- Returns {1 if the run was ended else 0, task runs cancelled, running attempts flagged}.
register('driver_run_lost', function(_, args)
  local ctx, a = context(args)
  local deadline = tonumber(redis.call('ZSCORE', K.DRIVERS, a[1]))
  if not deadline or deadline > server_now() then return {0, 0, 0} end
  local d = read(K.driver(a[1]), {'label', 'tolerance'})
  local message = 'driver lost: ' .. (d.label or a[1]) .. ' sent no heartbeat for more than ' ..
                  (d.tolerance or '?') .. ' s (FLOWKIT_PARTITION_TOLERANCE_SECONDS)'
  local flow_run_id = a[2]
  if not move_flow_run(ctx, flow_run_id, 'crashed', {'error_type', C.ERROR_TYPES.driver_lost,
                                                     'error_message', message}, false) then
    return {0, 0, 0}
  end
  local dropped, flagged = 0, 0
  for _, id in ipairs(redis.call('ZRANGE', K.flow_run_tasks(flow_run_id), 0, -1)) do
    local t = load_task(id)
    if t.state == 'pending' or t.state == 'retrying' then
      redis.call('ZREM', K.RETRIES_DUE, id)
      end_task_run(ctx, t, 'cancelled', {error_type = C.ERROR_TYPES.cancelled, message = message})
      dropped = dropped + 1
    elseif t.state == 'running' then
      redis.call('SADD', K.CANCELLING, id)
      redis.call('HSET', t.key, 'cancel_requested', ctx.ts)
      flagged = flagged + 1
    end
  end
  return {1, dropped, flagged}
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
     or redis.call('ZCARD', K.flow_run_tasks(id)) > 0 then
    return 0
  end
  redis.call('DEL', fr, K.logs(id))
  redis.call('ZREM', K.FLOW_RUNS, id)
  redis.call('ZREM', K.flow_runs_in_state(r.state or ''), id)
  redis.call('ZREM', K.flow_runs_named(r.name or ''), id)
  return 1
end)
