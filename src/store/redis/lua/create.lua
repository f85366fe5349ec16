-- `KEYS[1]` user hash; `ARGV`: now, sid, cap (0: none), channel, message
-- prefix (`s:<until>:<published>:`), chunk 0, chunk 1, … Returns the evicted sids.
--
-- Below the cap a login costs O(1): the user's sessions are only read when
-- the hash has at least `cap` fields (every session has at least one), that
-- is when the new session may push the user over the cap.
local key, now, sid, cap = KEYS[1], tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local old = redis.call('HGET', key, '\0' .. sid)
if old then drop(key, sid, old) end
local evicted = {}
if cap > 0 and redis.call('HLEN', key) >= cap then
  local others = {}
  for _, s in ipairs(scan(key)) do
    if live(s[2], now) then others[#others + 1] = s else drop(key, s[1], s[2]) end
  end
  if #others + 1 > cap then
    -- The oldest by (created_at, sid).
    table.sort(others, function(a, b)
      local x, y = rd(a[2], 1), rd(b[2], 1)
      if x ~= y then return x < y end
      return a[1] < b[1]
    end)
    for i = 1, #others + 1 - cap do
      drop(key, others[i][1], others[i][2])
      redis.call('PUBLISH', ARGV[4], ARGV[5] .. others[i][1])
      evicted[#evicted + 1] = others[i][1]
    end
    journal(key, evicted, now)
  end
end
-- Creation times are unique per user, so "the oldest" is the first created
-- even within one millisecond: field "\254" keeps the user's latest.
local meta = ARGV[6]
local last = redis.call('HGET', key, '\254')
if last and rd(last, 1) >= rd(meta, 1) then meta = wr(rd(last, 1) + 1) .. string.sub(meta, 7) end
local args = {'\0' .. sid, meta, '\254', string.sub(meta, 1, 6)}
for k = 1, #ARGV - 6 do
  args[#args + 1] = string.char(k) .. sid
  args[#args + 1] = ARGV[6 + k]
end
redis.call('HSET', key, unpack(args))
extend(key, rd(meta, 13) - now)
return evicted
