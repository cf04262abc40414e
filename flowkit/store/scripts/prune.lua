-- Delete finished flow runs older than the retention cutoff, with everything they own: task
-- runs, their histories, RQ jobs and results, the log stream, and index entries. The work per
-- call is bounded (a run with 100,000 task runs is deleted over several calls), so Redis never
-- stalls; the caller repeats while the reply says there is more.
-- KEYS[1] = flow runs by creation time (flowkit:flowruns)     KEYS[2] = dead-letter list
-- ARGV[1] = cutoff: flow runs that ended (or, without an end, were created) before it go
-- ARGV[2] = at most this many task runs per call
-- ARGV[3] = flow run key prefix   ARGV[4] = task run key prefix   ARGV[5] = RQ job key prefix
-- ARGV[6] = result key prefix     ARGV[7] = log stream key prefix
-- ARGV[8] = prefix of the flow run indexes by state   ARGV[9] = ... by name
-- ARGV[10..] = the terminal states
-- Returns {flow runs deleted, task runs deleted, 1 if more is due now else 0}.
local cutoff = tonumber(ARGV[1])
local budget = tonumber(ARGV[2])
local terminal = {}
for i = 10, #ARGV do terminal[ARGV[i]] = true end

local flows, tasks, skipped = 0, 0, 0
while budget > 0 do
  local batch = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', skipped, 20)
  if #batch == 0 then return {flows, tasks, 0} end
  for _, id in ipairs(batch) do
    if budget <= 0 then return {flows, tasks, 1} end
    local fr = ARGV[3] .. id
    local f = redis.call('HMGET', fr, 'state', 'ended', 'created', 'name', 'n_pending',
                         'n_running', 'n_retrying')
    local ended = tonumber(f[2] or f[3] or '0') or 0
    local busy = (tonumber(f[5]) or 0) + (tonumber(f[6]) or 0) + (tonumber(f[7]) or 0)
    if f[1] and (not terminal[f[1]] or ended >= cutoff or busy > 0) then
      skipped = skipped + 1  -- still running, or ended recently: kept for now
    else
      local index = fr .. ':tasks'
      local ids = redis.call('ZRANGE', index, 0, budget - 1)
      for _, t in ipairs(ids) do
        local tr = ARGV[4] .. t
        if redis.call('HGET', tr, 'state') == 'crashed' then
          redis.call('LREM', KEYS[2], 0, t)
        end
        redis.call('DEL', tr, tr .. ':history', ARGV[5] .. t, ARGV[6] .. t)
        redis.call('ZREM', index, t)
      end
      tasks = tasks + #ids
      budget = budget - #ids
      if redis.call('EXISTS', index) == 0 then
        redis.call('DEL', fr, ARGV[7] .. id)
        redis.call('ZREM', KEYS[1], id)
        if f[1] then redis.call('ZREM', ARGV[8] .. f[1], id) end
        if f[4] then redis.call('ZREM', ARGV[9] .. f[4], id) end
        flows = flows + 1
        budget = budget - 1
      end
    end
  end
end
return {flows, tasks, 1}
