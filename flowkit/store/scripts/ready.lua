-- Queue held task runs whose dependencies completed (the driver saw their upstreams end).
-- ARGV[1] = RQ job key prefix     ARGV[2] = RQ queue key prefix
-- ARGV[3..] = pairs: task run id, queue name
-- @include _bell.lua
for i = 3, #ARGV, 2 do
  redis.call('HSET', ARGV[1] .. ARGV[i], 'status', 'queued')
  push_task(ARGV[2] .. ARGV[i + 1], ARGV[i], false)
end
return (#ARGV - 2) / 2
