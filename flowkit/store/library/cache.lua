-- cache.lua: the cache side of ending a task run with a cache key (called by end_task_run,
-- so every way a run can end settles its key, whoever ends it: executor, stock RQ worker,
-- reaper, cancel).
--
-- Single flight: the first of several identical calls holds K.cache_lock(key) and runs; the
-- others wait PENDING in K.cache_waiters(key). A completed leader stores its result under
-- the key and answers every waiter; a leader that failed, timed out, crashed or was
-- cancelled hands the computation to the first waiter still pending.

-- The first pending waiter of a key becomes its leader and goes to its queue.
local function hand_over(key)
  local waiter = redis.call('LPOP', K.cache_waiters(key))
  while waiter do
    local w = read(K.task_run(waiter), {'state', 'queue'})
    if w.state == 'pending' then
      redis.call('SET', K.cache_lock(key), waiter, 'PX', C.CACHE_LOCK_MS)
      redis.call('HDEL', K.task_run(waiter), 'cache_wait')
      queue_task(waiter, w.queue, false)
      return
    end
    waiter = redis.call('LPOP', K.cache_waiters(key))
  end
end

settle = function(ctx, t, to, value)
  local key = t.cache_key
  local leader = redis.call('GET', K.cache_lock(key)) == t.id
  if to == 'completed' then
    if not value then return end
    local f = read(t.key, {'cache_ttl_ms'})
    if f.cache_ttl_ms and f.cache_ttl_ms ~= '' then
      redis.call('SET', K.cache(key), value, 'PX', f.cache_ttl_ms)
    else
      redis.call('SET', K.cache(key), value)
    end
    redis.call('SADD', K.cache_index(task_name(t)), key)
    if leader then
      redis.call('DEL', K.cache_lock(key))
      local message = 'answered by the run that computed cache key ' .. key
      for _, waiter in ipairs(redis.call('LRANGE', K.cache_waiters(key), 0, -1)) do
        local w = load_task(waiter)
        if w.state == 'pending' then answer_from_cache(ctx, w, value, message) end
      end
      redis.call('DEL', K.cache_waiters(key))
    end
  elseif S.TERMINAL[to] and not S.SUCCESS[to] then
    if leader then
      redis.call('DEL', K.cache_lock(key))
      hand_over(key)
    else
      redis.call('LREM', K.cache_waiters(key), 0, t.id)
    end
  end
end
