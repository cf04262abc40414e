-- A flow run retried from the dashboard has no driver: it closes itself when its last task
-- run ends.
local function close_if_done(fr, runs_state_prefix, t)
  local c = redis.call('HMGET', fr, 'auto_close', 'n_pending', 'n_running', 'n_retrying',
                       'n_failed', 'n_crashed', 'n_timed_out', 'state', 'id', 'created')
  if c[1] ~= '1' then return end
  if (tonumber(c[2]) or 0) + (tonumber(c[3]) or 0) + (tonumber(c[4]) or 0) > 0 then return end
  local bad = (tonumber(c[5]) or 0) + (tonumber(c[6]) or 0) + (tonumber(c[7]) or 0)
  local final = bad > 0 and 'failed' or 'completed'
  redis.call('HSET', fr, 'state', final, 'ended', t, 'updated', t, 'auto_close', '0')
  redis.call('ZREM', runs_state_prefix .. c[8], c[9])
  redis.call('ZADD', runs_state_prefix .. final, tonumber(c[10]) or t, c[9])
end
