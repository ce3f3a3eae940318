--- Assertions for Lua tests and agent self-checks. Each raises an error naming
--- the caller's line and both values on failure.
local check = require("check")

local M = {}

local function deep_equal(a, b, seen)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  seen = seen or {}
  if seen[a] == b then return true end
  seen[a] = b
  for k, v in pairs(a) do
    if not deep_equal(v, b[k], seen) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

--- True when `a` and `b` are equal, tables compared by content (cycles allowed).
---@param a any
---@param b any
---@return boolean
M.deep_equal = function(a, b) return deep_equal(a, b) end

local function show(v)
  if type(v) == "table" then return require("pretty").format(v) end
  return tostring(v)
end

--- Fails unless `actual` deep-equals `expected`.
---@param actual any
---@param expected any
---@param message? string what is being checked, put in front of the error
function M.eq(actual, expected, message)
  check.arg("testing.eq", "message", message, "string", true)
  if not deep_equal(actual, expected) then
    error(("%sexpected %s, got %s"):format(message and (message .. ": ") or "", show(expected), show(actual)), 2)
  end
end

--- Fails unless `value` is truthy.
---@param value any
---@param message? string
function M.truthy(value, message)
  check.arg("testing.truthy", "message", message, "string", true)
  if not value then error((message or "expected a truthy value") .. ", got " .. tostring(value), 2) end
end

--- Fails unless `fn` raises an error whose text contains `fragment` (plain text).
--- Returns the error.
---@param fn fun()
---@param fragment? string
---@return any err
function M.raises(fn, fragment)
  check.arg("testing.raises", "fn", fn, "callable")
  check.arg("testing.raises", "fragment", fragment, "string", true)
  local ok, err = pcall(fn)
  if ok then error("expected an error" .. (fragment and (" containing '" .. fragment .. "'") or ""), 2) end
  if fragment and not tostring(err):find(fragment, 1, true) then
    error(("expected an error containing '%s', got: %s"):format(fragment, tostring(err)), 2)
  end
  return err
end

return M
