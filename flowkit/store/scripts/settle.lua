-- Settle the cache after task runs with a cache key ended: a completed leader stores its
-- result under the key and answers every call that waited for it; a leader that failed, timed
-- out, crashed or was cancelled hands the computation to the first waiter. Runs still
-- retrying are left alone.
-- KEYS[1] = events stream
-- ARGV[1] = now                  ARGV[2] = task run key prefix   ARGV[3] = flow run key prefix
-- ARGV[4] = RQ queue key prefix  ARGV[5] = RQ job key prefix     ARGV[6] = result key prefix
-- ARGV[7] = cache key prefix     ARGV[8] = cache index key prefix (+ task name)
-- ARGV[9] = result ttl ms        ARGV[10] = reply stream max length
-- ARGV[11] = results up to this size ride in the reply            ARGV[12..] = task run ids
-- @include _bell.lua
local now = tonumber(ARGV[1])
local terminal = {failed = true, timed_out = true, crashed = true, cancelled = true}

local function answer(waiter, value, cache_key)
  local tr = ARGV[2] .. waiter
  local f = redis.call('HMGET', tr, 'state', 'flow_run_id', 'reply_to')
  if f[1] ~= 'pending' then return end
  redis.call('HSET', tr, 'state', 'cached', 'started', now, 'ended', now, 'duration', 0,
             'cache_hit', '1', 'result_size', string.len(value), 'updated', now)
  redis.call('HDEL', tr, 'cache_wait')
  redis.call('SET', ARGV[6] .. waiter, value, 'PX', ARGV[9])
  redis.call('RPUSH', tr .. ':history', cjson.encode({state = 'cached', ts = now, attempt = 0,
    message = 'answered by the run that computed cache key ' .. cache_key}))
  redis.call('HINCRBY', ARGV[3] .. f[2], 'n_pending', -1)
  redis.call('HINCRBY', ARGV[3] .. f[2], 'n_cached', 1)
  redis.call('DEL', ARGV[5] .. waiter)
  local msg = {'kind', 'done', 'id', waiter, 'state', 'cached'}
  if string.len(value) <= tonumber(ARGV[11]) then
    table.insert(msg, 'result'); table.insert(msg, value)
  end
  if f[3] and f[3] ~= '' then
    redis.call('XADD', f[3], 'MAXLEN', '~', ARGV[10], '*', unpack(msg))
  end
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', 10000, '*', 'kind', 'task', 'id', waiter,
             'flow_run_id', f[2], 'state', 'cached')
end

for i = 12, #ARGV do
  local id = ARGV[i]
  local f = redis.call('HMGET', ARGV[2] .. id, 'state', 'cache_key', 'cache_ttl_ms',
                       'task_name')
  local cache_key = f[2]
  if cache_key and cache_key ~= '' then
    local base = ARGV[7] .. cache_key
    local leader = redis.call('GET', base .. ':lock') == id
    if f[1] == 'completed' then
      local value = redis.call('GET', ARGV[6] .. id)
      if value then
        if f[3] and f[3] ~= '' then
          redis.call('SET', base, value, 'PX', f[3])
        else
          redis.call('SET', base, value)
        end
        redis.call('SADD', ARGV[8] .. f[4], cache_key)
        if leader then
          redis.call('DEL', base .. ':lock')
          for _, waiter in ipairs(redis.call('LRANGE', base .. ':waiters', 0, -1)) do
            answer(waiter, value, cache_key)
          end
          redis.call('DEL', base .. ':waiters')
        end
      end
    elseif terminal[f[1]] then
      if leader then
        redis.call('DEL', base .. ':lock')
        local waiter = redis.call('LPOP', base .. ':waiters')
        while waiter do
          local w = redis.call('HMGET', ARGV[2] .. waiter, 'state', 'queue')
          if w[1] == 'pending' then
            redis.call('SET', base .. ':lock', waiter, 'PX', 86400000)
            redis.call('HDEL', ARGV[2] .. waiter, 'cache_wait')
            redis.call('HSET', ARGV[5] .. waiter, 'status', 'queued')
            push_task(ARGV[4] .. w[2], waiter, false)
            break
          end
          waiter = redis.call('LPOP', base .. ':waiters')
        end
      else
        redis.call('LREM', base .. ':waiters', 0, id)
      end
    end
  end
end
return 1
