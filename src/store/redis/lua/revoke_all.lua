-- `KEYS[1]` user hash; `ARGV`: now, channel, message prefix (`s:<until>:<published>:`),
-- the sid to keep (empty: none). Returns the revoked (live) sids.
local key, now, except = KEYS[1], tonumber(ARGV[1]), ARGV[4]
local out = {}
for _, s in ipairs(scan(key)) do
  if s[1] ~= except then
    drop(key, s[1], s[2])
    if live(s[2], now) then
      redis.call('PUBLISH', ARGV[2], ARGV[3] .. s[1])
      out[#out + 1] = s[1]
    end
  end
end
if #out > 0 then journal(key, out, now) end
return out
