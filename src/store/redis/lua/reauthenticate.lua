-- `KEYS[1]` user hash; `ARGV`: sid, now. Sets the session's authentication
-- time to now. Returns `{}` when it is not live, else `{chunk 0, chunk 1, …}`.
local key, sid, now = KEYS[1], ARGV[1], tonumber(ARGV[2])
local head = '\0' .. sid
local m = redis.call('HGET', key, head)
if not m then return {} end
if not live(m, now) then drop(key, sid, m); return {} end
m = string.sub(m, 1, 36) .. wr(now) .. string.sub(m, 43)
redis.call('HSET', key, head, m)
return whole(key, sid, m)
