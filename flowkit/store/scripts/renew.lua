-- Extend the leases of the attempts a worker is running (called by its supervisor).
-- KEYS[1] = leases sorted set
-- ARGV[1] = worker id   ARGV[2] = new deadline   ARGV[3] = task run key prefix
-- ARGV[4..] = task run ids in the worker's processing lists
-- Only attempts still running on this worker are renewed; a lease the reaper already
-- collected is not brought back (ZADD XX).
local n = 0
for i = 4, #ARGV do
  local f = redis.call('HMGET', ARGV[3] .. ARGV[i], 'state', 'worker')
  if f[1] == 'running' and f[2] == ARGV[1] then
    n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[2], ARGV[i])
  end
end
return n
