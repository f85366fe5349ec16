-- Shared helpers, prepended to every session script. See the `RedisStore`
-- docs for the layout they read and write (offsets here are 1-based: the
-- metadata's six-byte fields start at 1, 7, 13, 19, 25, 31 and 37, and the
-- chunk count is byte 43).
local function rd(s, o)
  local a, b, c, d, e, f = string.byte(s, o, o + 5)
  return ((((a * 256 + b) * 256 + c) * 256 + d) * 256 + e) * 256 + f
end
local function wr(n)
  local t = {}
  for i = 6, 1, -1 do t[i] = n % 256; n = math.floor(n / 256) end
  return string.char(t[1], t[2], t[3], t[4], t[5], t[6])
end
local function live(m, now) return now < rd(m, 13) and now < rd(m, 7) end
local function fields(sid, m)
  local t = {}
  for k = 0, string.byte(m, 43) - 1 do t[k + 1] = string.char(k) .. sid end
  return t
end
local function drop(key, sid, m) redis.call('HDEL', key, unpack(fields(sid, m))) end
-- A session's chunks in order, chunk 0 (`m`) already read.
local function whole(key, sid, m)
  local names = fields(sid, m)
  if #names == 1 then return {m} end
  table.remove(names, 1)
  local out = {m}
  for _, v in ipairs(redis.call('HMGET', key, unpack(names))) do out[#out + 1] = v end
  return out
end
-- Pushes the key's TTL up to at least `ttl` ms, never down: one PEXPIRE ... GT on
-- Redis 7+ (which knows REDIS_VERSION_NUM); PTTL then PEXPIRE when GT declined
-- (a key without TTL) or on Redis 6.2.
local function extend(key, ttl)
  if redis.REDIS_VERSION_NUM and redis.call('PEXPIRE', key, ttl, 'GT') == 1 then return end
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
-- Chunk 0 of every session: {{sid, chunk 0}, …}, and the whole hash.
local function scan(key)
  local all, out = redis.call('HGETALL', key), {}
  for i = 1, #all, 2 do
    if string.byte(all[i], 1) == 0 then out[#out + 1] = {string.sub(all[i], 2), all[i + 1]} end
  end
  return out, all
end
-- The journal: field "\255" of the user's hash, the sessions revoked in the
-- last minute as `revoked_at (6 bytes) ‖ sid length (1 byte) ‖ sid`. Written
-- atomically with every revocation, so a caller that lost a script's reply
-- (a dropped connection, a timeout) can still learn what it revoked and
-- record it for instances that start later.
local JOURNAL, JOURNAL_MS = '\255', 60000
local function journal_read(key, now)
  local j, out = redis.call('HGET', key, JOURNAL) or '', {}
  local i = 1
  while i + 6 <= #j do
    local at, n = rd(j, i), string.byte(j, i + 6)
    if at + JOURNAL_MS > now then out[#out + 1] = {string.sub(j, i + 7, i + 6 + n), at} end
    i = i + 7 + n
  end
  return out
end
local function journal(key, sids, now)
  local parts = {}
  for _, e in ipairs(journal_read(key, now)) do parts[#parts + 1] = wr(e[2]) .. string.char(#e[1]) .. e[1] end
  for _, sid in ipairs(sids) do
    if #sid < 256 then parts[#parts + 1] = wr(now) .. string.char(#sid) .. sid end
  end
  redis.call('HSET', key, JOURNAL, table.concat(parts))
  extend(key, JOURNAL_MS)
end
