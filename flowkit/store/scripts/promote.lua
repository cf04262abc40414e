-- Move retries whose delay has passed to the end of their queue (run by every supervisor).
-- KEYS[1] = scheduled sorted set, members "<queue key>|<task run id>", score: due time
-- ARGV[1] = now
-- Returns how many were moved.
-- @include _bell.lua
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1000)
for _, member in ipairs(due) do
  local sep = string.find(member, '|', 1, true)
  push_task(string.sub(member, 1, sep - 1), string.sub(member, sep + 1), false)
  redis.call('ZREM', KEYS[1], member)
end
return #due
