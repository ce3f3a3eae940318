--- Pretty-printing of Lua values (tables sorted by key, cycles marked).
local check = require("check")

local M = {}

local function key_repr(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return k end
  return "[" .. M.format(k) .. "]"
end

local function fmt(v, indent, depth, seen)
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t ~= "table" then return tostring(v) end
  if seen[v] then return "<cycle>" end
  if next(v) == nil then return "{}" end
  seen[v] = true
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  local pad = string.rep(indent, depth + 1)
  local parts = {}
  for _, k in ipairs(keys) do
    parts[#parts + 1] = pad .. key_repr(k) .. " = " .. fmt(v[k], indent, depth + 1, seen)
  end
  seen[v] = nil
  return "{\n" .. table.concat(parts, ",\n") .. "\n" .. string.rep(indent, depth) .. "}"
end

--- A readable multi-line representation of `value`.
---@param value any
---@param indent string|nil indentation unit (default two spaces)
---@return string
function M.format(value, indent)
  check.arg("pretty.format", "indent", indent, "string", true)
  return fmt(value, indent or "  ", 0, {})
end

--- Logs `value` formatted, at info level.
---@param value any
function M.print(value)
  log.info(M.format(value))
end

return M
