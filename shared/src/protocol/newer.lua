-- Byte-wise comparison of version ids: Lua's `<` on strings follows the
-- server's locale. Prepended to the scripts that order versions.
local function newer(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end

