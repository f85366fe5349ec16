-- `KEYS[1]` user hash; `ARGV`: now, what to undo ('r', 'c' or '-'), sid,
-- counter, time. After a script whose reply was lost (timeout, dropped
-- connection), undoes what the caller never delivered, and returns the
-- journal `{sid, revoked_at, …}` so the caller can record what was revoked.
--
-- 'r': a rotation to `counter` made at `time` (the client still holds the
-- previous token; anyone who did receive the successor is one ahead, which
-- rotation accepts). 'c': a session created at `time` (its authentication
-- time: creation times may be bumped) whose tokens nobody received (it would
-- count against the cap).
local key, now, what, sid = KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3]
local counter, time = tonumber(ARGV[4]), tonumber(ARGV[5])
local head = '\0' .. sid
local m = (what ~= '-') and redis.call('HGET', key, head)
if m then
  if what == 'r' and rd(m, 31) == counter and rd(m, 25) == time then
    redis.call('HSET', key, head, string.sub(m, 1, 30) .. wr(counter - 1) .. string.sub(m, 37))
  elseif what == 'c' and rd(m, 31) == 0 and rd(m, 37) == time then
    drop(key, sid, m)
  end
end
local out = {}
for _, e in ipairs(journal_read(key, now)) do
  out[#out + 1] = e[1]
  out[#out + 1] = e[2]
end
return out
