-- Extend the leases of the attempts a worker holds (called by its supervisor).
-- KEYS[1] = leases sorted set
-- ARGV[1] = worker id   ARGV[2] = new deadline   ARGV[3] = task run key prefix
-- ARGV[4] = how many of the ids that follow are running right now (they come first)
-- ARGV[5..] = task run ids in the worker's processing lists
-- Only attempts still running on this worker are renewed; a lease the reaper already
-- collected is not brought back (ZADD XX). The attempts running right now are marked
-- 'in_hand' (with their attempt number): if the whole worker dies, only they count as crashed
-- (crash.lua), not what its executors had claimed and not started.
local n = 0
local in_hand = tonumber(ARGV[4])
for i = 5, #ARGV do
  local tr = ARGV[3] .. ARGV[i]
  local f = redis.call('HMGET', tr, 'state', 'worker', 'attempt')
  if f[1] == 'running' and f[2] == ARGV[1] then
    n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[2], ARGV[i])
    if i < 5 + in_hand then redis.call('HSET', tr, 'in_hand', f[3]) end
  end
end
return n
