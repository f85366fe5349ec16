-- `KEYS[1]` user hash; `ARGV`: now. Returns `{{sid, chunk 0, chunk 1, …}, …}` of
-- live sessions, dropping expired ones.
local key, now = KEYS[1], tonumber(ARGV[1])
local sessions, all = scan(key)
local by_field = {}
for i = 1, #all, 2 do by_field[all[i]] = all[i + 1] end
local out = {}
for _, s in ipairs(sessions) do
  if live(s[2], now) then
    local one = {s[1]}
    for i, f in ipairs(fields(s[1], s[2])) do one[i + 1] = by_field[f] or '' end
    out[#out + 1] = one
  else
    drop(key, s[1], s[2])
  end
end
return out
