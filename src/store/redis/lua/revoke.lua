-- `KEYS[1]` user hash; `ARGV`: sid, now, channel, message prefix (`s:<until>:<published>:`).
-- Returns 1 when a live session was revoked.
local key, sid, now = KEYS[1], ARGV[1], tonumber(ARGV[2])
local m = redis.call('HGET', key, '\0' .. sid)
if not m then return 0 end
drop(key, sid, m)
if not live(m, now) then return 0 end
redis.call('PUBLISH', ARGV[3], ARGV[4] .. sid)
journal(key, {sid}, now)
return 1
