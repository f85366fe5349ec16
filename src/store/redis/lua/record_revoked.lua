-- `KEYS[1]` revocation sorted set; `ARGV`: now, channel, then
-- `until, member, message` triples. Records revocations (scored by the Unix ms
-- until which they matter), prunes past ones, keeps the key's TTL at the
-- latest, then publishes them again: a subscriber that subscribed after the
-- session script's publish either loads them from the set or hears them now.
local key, now = KEYS[1], tonumber(ARGV[1])
for i = 3, #ARGV, 3 do redis.call('ZADD', key, 'GT', ARGV[i], ARGV[i + 1]) end
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIRE', key, math.max(1, tonumber(last[2]) - now)) end
for i = 3, #ARGV, 3 do redis.call('PUBLISH', ARGV[2], ARGV[i + 2]) end
return 0
