-- Give back claimed task runs that an executor has not started (its batch is running slow,
-- or it is shutting down): they return to the front of their queue, as if never claimed.
-- KEYS[1] = processing list of the executor      KEYS[2] = leases sorted set
-- ARGV[1] = worker id      ARGV[2] = task run key prefix     ARGV[3] = flow run key prefix
-- ARGV[4] = RQ job key prefix      ARGV[5] = RQ queue key prefix
-- ARGV[6] = queue stats key prefix
-- ARGV[7..] = task run ids, in the order they were claimed
-- Returns how many were given back.
-- @include _give_back.lua
local n = 0
for i = #ARGV, 7, -1 do
  local id = ARGV[i]
  local tr = ARGV[2] .. id
  local f = redis.call('HMGET', tr, 'state', 'worker', 'flow_run_id', 'queue')
  if f[1] == 'running' and f[2] == ARGV[1] and redis.call('LREM', KEYS[1], 0, id) > 0 then
    redis.call('ZREM', KEYS[2], id)
    give_back(id, tr, ARGV[3] .. f[3], ARGV[5] .. f[4], ARGV[4] .. id, ARGV[6] .. f[4])
    n = n + 1
  end
end
return n
