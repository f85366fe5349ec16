-- `KEYS[1]` user hash; `ARGV`: sid, presented, now, grace, idle ttl, channel,
-- message prefix (`s:<until>:<published>:`). Returns `{'N'}`, `{'T'}`, or
-- `{'R' | 'F' | 'P', chunk 0, chunk 1, …}` (rotated, fast-forwarded, replayed).
--
-- The hot path, kept to three commands for a session of one or two chunks
-- (a 40-byte user agent makes two): chunks 0 and 1 in one `HMGET`, the new
-- chunk 0 in one `HSET`, and `extend`. `struct` (a C library every Redis
-- ships to scripts) reads and writes the metadata at once: Redis CPU per
-- rotation is mostly per-command and per-Lua-operation overhead.
--
-- A counter one ahead of the stored one is a successor this service minted
-- whose rotation the store lost (failover): it advances like the current one.
local key, sid = KEYS[1], ARGV[1]
local presented, now, grace, idle = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local head = '\0' .. sid
local got = redis.call('HMGET', key, head, '\1' .. sid)
local m = got[1]
if not m then return {'N'} end
local _, absolute, idle_at, _, rotated, counter, _, n = struct.unpack('>I6I6I6I6I6I6I6B', m)
if not (now < idle_at and now < absolute) then drop(key, sid, m); return {'N'} end
local code = 'P'
if presented == counter or presented == counter + 1 then
  local expires = math.min(now + idle, absolute)
  m = string.sub(m, 1, 12) .. struct.pack('>I6I6I6I6', expires, now, now, presented + 1) .. string.sub(m, 37)
  redis.call('HSET', key, head, m)
  extend(key, expires - now)
  code = (presented == counter) and 'R' or 'F'
elseif not (counter > 0 and presented == counter - 1 and now - rotated <= grace) then
  drop(key, sid, m)
  redis.call('PUBLISH', ARGV[6], ARGV[7] .. sid)
  journal(key, {sid}, now)
  return {'T'}
end
if n == 1 then return {code, m} end
local out = {code, m, got[2]}
if n > 2 then
  local names = {}
  for k = 2, n - 1 do names[k - 1] = string.char(k) .. sid end
  for _, v in ipairs(redis.call('HMGET', key, unpack(names))) do out[#out + 1] = v end
end
return out
