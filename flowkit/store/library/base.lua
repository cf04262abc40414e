-- base.lua: what every entry point of the library shares: the call context, reading hashes
-- into tables, history entries, state events and replies to drivers.
--
-- The calling convention of every function in the library (flowkit/store/functions.py):
--   no KEYS (keys are built here with K.*, from ids),
--   ARGV[1] = reserved, ignored (it once carried the caller's clock)   ARGV[2] = result ttl in ms
--   ARGV[3] = results up to this many bytes ride inside the reply message
--   ARGV[4] = crashes before a task run is dead-lettered
--   ARGV[5..] = the function's own arguments, documented in its header as a[1], a[2], ...
--
-- Time is the server's: ctx.now (epoch seconds, a number) and ctx.ts (the same instant as a
-- string with microseconds, for hash fields) come from TIME, read once per call. Leases,
-- heartbeats, due retries and reaping then all compare one clock, whatever the hosts' clocks
-- say (a worker an hour ahead once reaped healthy runs 41 ms after they started).

-- The server's clock: epoch seconds as a number and as a string with microseconds.
local function server_now()
  local t = redis.call('TIME')
  local ts = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
  return tonumber(ts), ts
end

local function context(args)
  local own = {}
  for i = 5, #args do own[i - 4] = args[i] end
  local now, ts = server_now()
  return {now = now, ts = ts, ttl_ms = args[2], inline = tonumber(args[3]),
          max_crashes = tonumber(args[4])}, own
end

-- HMGET into a table by field name; absent fields stay nil.
local function read(key, names)
  local values = redis.call('HMGET', key, unpack(names))
  local out = {}
  for i, name in ipairs(names) do
    if values[i] then out[name] = values[i] end
  end
  return out
end

-- Append one JSON state transition to a task run's history.
local function append_history(id, entry)
  redis.call('RPUSH', K.task_run_history(id), cjson.encode(entry))
end

-- A state event, schema version C.EVENT_VERSION (flowkit/store/events.py): event = the
-- kind's prefix (C.TASK_RUN_EVENT, C.FLOW_RUN_EVENT) and the state, id = the run,
-- flow_run_id = the task run's flow run (task events only).
local function emit(prefix, state, id, flow_run_id)
  if flow_run_id then
    redis.call('XADD', K.EVENTS, 'MAXLEN', '~', C.EVENTS_MAXLEN, '*', 'v', C.EVENT_VERSION,
               'event', prefix .. state, 'id', id, 'flow_run_id', flow_run_id)
  else
    redis.call('XADD', K.EVENTS, 'MAXLEN', '~', C.EVENTS_MAXLEN, '*', 'v', C.EVENT_VERSION,
               'event', prefix .. state, 'id', id)
  end
end

-- A message on a driver's reply stream (none when the run has no driver).
local function reply(stream, fields)
  if stream and stream ~= '' then
    redis.call('XADD', stream, 'MAXLEN', '~', C.REPLY_MAXLEN, '*', unpack(fields))
  end
end

-- The transition check every helper makes before it writes: a move the state table in
-- flowkit/states.py does not allow is refused (logged, nothing written).
local function allowed(from, to, what)
  local row = S.ALLOWED[from or '']
  if row and row[to] then return true end
  redis.log(redis.LOG_WARNING, 'flowkit: refused ' .. what .. ': ' .. tostring(from) .. ' -> ' ..
            tostring(to) .. ' is not a transition flowkit/states.py allows')
  return false
end
