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
-- Time is the server's: ctx.now (epoch seconds, a number), ctx.ts (the same instant as a
-- string with microseconds, for hash fields) and ctx.us (in microseconds, an integer number:
-- task run records keep times as such, see us_text) come from TIME, read once per call. Leases,
-- heartbeats, due retries and reaping then all compare one clock, whatever the hosts' clocks
-- say (a worker an hour ahead once reaped healthy runs 41 ms after they started).

-- The server's clock: epoch seconds as a number and as a string with microseconds, and
-- epoch microseconds (exact in a Lua number: under 2^53).
local function server_now()
  local t = redis.call('TIME')
  local ts = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
  return tonumber(ts), ts, tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- An integer number as a hash value: Lua would write a large one as '1.79e+15' (a record
-- keeps epoch microseconds; Redis stores the digits as an integer in a listpack).
local function us_text(n)
  return string.format('%.0f', n)
end

-- What a call writes once for all the runs it moves, at its end (flush_writes, which
-- `register` calls after every entry point): counter increments, state events (one stream
-- entry per state and flow run, listing the task runs), reply messages (one entry per driver
-- stream), lease changes and the flow runs to close when their last task run ended. A call
-- that moves 32 task runs then writes a handful of commands instead of a dozen per run.
local W

begin_writes = function()
  W = {counts = {}, count_order = {}, events = {}, event_order = {}, replies = {},
       reply_order = {}, leases = {}, lease_order = {}, close_order = {}, closing = {},
       reply_of = {}, keys = {}}
end
begin_writes()

local function context(args)
  local own = {}
  for i = 5, #args do own[i - 4] = args[i] end
  local now, ts, us = server_now()
  local ctx = {now = now, ts = ts, us = us, ttl_ms = args[2], inline = tonumber(args[3]),
               max_crashes = tonumber(args[4])}
  W.ctx = ctx
  return ctx, own
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

-- Field names built once, not per run (building a string costs about a microsecond in
-- the server's Lua: a task run's path through the library is made of such steps).
-- (Built on first use: the library's load step may not call Lua's standard functions.)
local function memoized(cache, key, make)
  local value = cache[key]
  if value == nil then
    value = make(key)
    cache[key] = value
  end
  return value
end
local N_FIELD, H_FIELD = {}, {}
local function make_n_field(state) return 'n_' .. state end
local function make_h_field(n) return 'h' .. n end
-- The flow run's counter of a state; a history entry's field.
local function n_field(state) return memoized(N_FIELD, state, make_n_field) end
local function h_field(n) return memoized(H_FIELD, n, make_h_field) end
-- A field of a 'done' reply, '<name>:<i>' (no closure per call: this runs for every field
-- of every outcome).
local NUMBERED = {}
local function numbered(name, i)
  local names = NUMBERED[name]
  if not names then
    names = {}
    NUMBERED[name] = names
  end
  local field = names[i]
  if not field then
    field = name .. ':' .. i
    names[i] = field
  end
  return field
end

-- A JSON string literal (plain text needs no encoder).
local function json_text(value)
  if string.find(value, '[%c"\\]') then return cjson.encode(value) end
  return '"' .. value .. '"'
end

-- One state transition for a task run's history, as the value of hash field h<n> (the
-- record keeps its history inside it: no list key per run, no command of its own). A JSON
-- array, not an object: [state, ts, attempt, worker, error_type, message, retry_in] with
-- trailing items left out, so that a plain entry stays under 64 bytes and the record stays a
-- compact listpack (flowkit/store/task_records.py reads it back into named fields).
-- e.ts: microseconds after the record's created time c (a number); records written before
-- that layout have entries with epoch seconds (a string with a '.', see correct_start).
local function history_entry(e)
  local ts = e.ts
  if type(ts) == 'number' then ts = us_text(ts) end
  local out = '["' .. e.state .. '",' .. ts .. ',' .. (e.attempt or 0)
  if e.error_type or e.message or e.retry_in then
    out = out .. ',' .. json_text(e.worker or '') .. ',' .. json_text(e.error_type or '') ..
          ',' .. json_text(e.message or '')
    if e.retry_in then out = out .. ',' .. e.retry_in end
  elseif e.worker then
    out = out .. ',' .. json_text(e.worker)
  end
  return out .. ']'
end

-- Microseconds from task run t's created time (its field c) to now. A record written before
-- the compact layout has no c: its times are then epoch microseconds (c = 0).
local function since_created(ctx, t)
  return ctx.us - (tonumber(t.c) or 0)
end

-- The current attempt's history is implied while it is plain (the common case, and most of
-- what a big map leaves behind): b (its start, microseconds after c) stands for its
-- 'running' entry, and e (its length in microseconds, set by an end with no error, message
-- or other worker) for the entry that ended it. Before any other entry is added they are
-- written out as explicit entries, and save() drops b and e.
local function write_out_implied(t, fields)
  local b = tonumber(t.b)
  if not b then return end
  local n = (tonumber(t.hn) or 0) + 1
  local i = #fields
  fields[i + 1], fields[i + 2] = h_field(n), history_entry({
    state = 'running', ts = b, attempt = t.attempt or 0, worker = t.worker})
  if t.e then
    n = n + 1
    fields[i + 3], fields[i + 4] = h_field(n), history_entry({
      state = t.state, ts = b + tonumber(t.e), attempt = t.attempt or 0})
  end
  t.hn, t.b, t.e, t.implied_out = n, nil, nil, true
end

-- Add the next history entry of task run t to `fields` (the HSET its transition makes):
-- h<n> and the count hn (t.hn is the count load_task read), after the implied entries of
-- its attempt (write_out_implied).
local function add_history(t, fields, entry)
  write_out_implied(t, fields)
  local n = (tonumber(t.hn) or 0) + 1
  t.hn = n
  local i = #fields
  fields[i + 1], fields[i + 2], fields[i + 3], fields[i + 4] =
    h_field(n), history_entry(entry), 'hn', n
end

-- Write task run t's fields (one HSET), and drop b and e once its implied entries were
-- written out (add_history).
local function save(t, fields)
  redis.call('HSET', t.key, unpack(fields))
  if t.implied_out then
    redis.call('HDEL', t.key, 'b', 'e')
    t.implied_out = nil
  end
end

-- A key this call uses for many runs (a flow run's, a queue's), built once per call.
local function memo_key(build, id)
  local memo = W.keys[build]
  if not memo then
    memo = {}
    W.keys[build] = memo
  end
  local key = memo[id]
  if not key then
    key = build(id)
    memo[id] = key
  end
  return key
end

-- Add `by` to field `field` of hash `key` when the call ends.
local function count(key, field, by)
  local c = W.counts[key]
  if not c then
    c = {fields = {}, order = {}}
    W.counts[key] = c
    table.insert(W.count_order, key)
  end
  if c.fields[field] == nil then
    c.fields[field] = 0
    table.insert(c.order, field)
  end
  c.fields[field] = c.fields[field] + by
end

-- A state event, schema version C.EVENT_VERSION (flowkit/store/events.py): event = the
-- kind's prefix (C.TASK_RUN_EVENT, C.FLOW_RUN_EVENT) and the state, ids = the runs
-- (comma-separated), flow_run_id = the task runs' flow run (task events only). Flow run
-- events are written at once; task run events are grouped by state and flow run and written
-- when the call ends, one entry per group.
local function emit(prefix, state, id, flow_run_id)
  if not flow_run_id then
    redis.call('XADD', K.EVENTS, 'MAXLEN', '~', C.EVENTS_MAXLEN, '*', 'v', C.EVENT_VERSION,
               'event', prefix .. state, 'ids', id)
    return
  end
  local group = prefix .. state .. ' ' .. flow_run_id
  local g = W.events[group]
  if not g then
    g = {event = prefix .. state, flow_run_id = flow_run_id, ids = {}}
    W.events[group] = g
    table.insert(W.event_order, group)
  end
  table.insert(g.ids, id)
end

-- A message on a driver's reply stream (none when the run has no driver), written at once.
local function reply(stream, fields)
  if stream and stream ~= '' then
    redis.call('XADD', stream, 'MAXLEN', '~', C.REPLY_MAXLEN, '*', unpack(fields))
  end
end

-- A task run's end, for its driver: gathered per stream and written as one 'done' entry per
-- stream when the call ends: n, then id:i, state:i and the optional result:i, error_type:i,
-- error_message:i, traceback:i, exception:i for i = 1..n (flowkit/driver.py reads them).
local function reply_done(stream, fields)
  if not stream or stream == '' then return end
  local r = W.replies[stream]
  if not r then
    r = {}
    W.replies[stream] = r
    table.insert(W.reply_order, stream)
  end
  table.insert(r, fields)
end

-- A task run's lease when the call ends: a deadline (held) or false (dropped).
local function set_lease(id, deadline)
  if W.leases[id] == nil then table.insert(W.lease_order, id) end
  W.leases[id] = deadline
end

-- A flow run to check for its end once the call's counters are written.
local function close_later(flow_run_id)
  if flow_run_id and not W.closing[flow_run_id] then
    W.closing[flow_run_id] = true
    table.insert(W.close_order, flow_run_id)
  end
end

-- A flow run's task index is a list; runs recorded before issue 9 have a sorted set. The
-- few readers of an index go through these, so that those runs stay readable and prunable.
local function index_is_zset(key)
  return redis.call('TYPE', key).ok == 'zset'
end
local function index_len(key)
  if index_is_zset(key) then return redis.call('ZCARD', key) end
  return redis.call('LLEN', key)
end
local function index_range(key, start, stop)
  if index_is_zset(key) then return redis.call('ZRANGE', key, start, stop) end
  return redis.call('LRANGE', key, start, stop)
end
local function index_drop_first(key, n)  -- the first n ids
  if n <= 0 then return end
  if index_is_zset(key) then
    redis.call('ZREMRANGEBYRANK', key, 0, n - 1)
  else
    redis.call('LTRIM', key, n, -1)
  end
end

-- A command with many arguments goes in slices: Lua's unpack has a stack limit.
local function call_sliced(command, key, args, step)
  for i = 1, #args, step do
    redis.call(command, key, unpack(args, i, math.min(i + step - 1, #args)))
  end
end

local close_if_done  -- transitions.lua

-- Write what the call gathered: counters first (closing a flow run reads them), leases,
-- task events and replies, then the flow runs whose last task run ended.
flush_writes = function()
  for _, key in ipairs(W.count_order) do
    local c = W.counts[key]
    for _, field in ipairs(c.order) do
      if c.fields[field] ~= 0 then redis.call('HINCRBY', key, field, c.fields[field]) end
    end
  end
  local held, dropped = {}, {}
  for _, id in ipairs(W.lease_order) do
    local deadline = W.leases[id]
    if deadline then
      table.insert(held, deadline); table.insert(held, id)
    else
      table.insert(dropped, id)
    end
  end
  if #held > 0 then call_sliced('ZADD', K.LEASES, held, 1000) end
  if #dropped > 0 then call_sliced('ZREM', K.LEASES, dropped, 500) end
  for _, group in ipairs(W.event_order) do
    local g = W.events[group]
    redis.call('XADD', K.EVENTS, 'MAXLEN', '~', C.EVENTS_MAXLEN, '*', 'v', C.EVENT_VERSION,
               'event', g.event, 'ids', table.concat(g.ids, ','), 'flow_run_id', g.flow_run_id)
  end
  for _, stream in ipairs(W.reply_order) do
    local msg = {'kind', 'done', 'n', #W.replies[stream]}
    for i, fields in ipairs(W.replies[stream]) do
      for j = 1, #fields, 2 do
        local k = #msg
        msg[k + 1], msg[k + 2] = numbered(fields[j], i), fields[j + 1]
      end
    end
    redis.call('XADD', stream, 'MAXLEN', '~', C.REPLY_MAXLEN, '*', unpack(msg))
  end
  local ctx, closing = W.ctx, W.close_order
  begin_writes()
  if ctx and #closing > 0 then
    W.ctx = ctx
    for _, id in ipairs(closing) do close_if_done(ctx, id) end
    flush_writes()  -- what closing them wrote
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
