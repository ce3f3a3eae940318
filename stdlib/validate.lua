--- Validation helpers: secret detection and task constraints.
local check = require("check")

local M = {}

--- Lua patterns of strings that look like secrets.
M.SECRET_PATTERNS = {
  -- A token pattern takes the whole token, however long, so redact leaves no tail.
  { name = "aws access key", pattern = "AKIA" .. ("[%u%d]"):rep(16) .. "[%u%d]*" },
  { name = "private key", pattern = "%-%-%-%-%-BEGIN [%u ]*PRIVATE KEY" },
  { name = "api token", pattern = "sk%-" .. ("[%w_%-]"):rep(16) .. "[%w_%-]*" },
  { name = "github token", pattern = "ghp_" .. ("%w"):rep(20) .. "%w*" },
  { name = "password assignment", pattern = "[Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd]%s*[=:]%s*[^%s*]+" },
  { name = "secret assignment", pattern = "[Ss][Ee][Cc][Rr][Ee][Tt]%s*[=:]%s*[^%s*]+" },
}

--- Longest string scanned, so a pattern can never run long on a huge value.
M.MAX_SCAN = 64 * 1024

local function scan_string(s, path, found)
  s = s:sub(1, M.MAX_SCAN)
  for _, p in ipairs(M.SECRET_PATTERNS) do
    if s:find(p.pattern) then
      found[#found + 1] = { path = path, kind = p.name }
    end
  end
end

local function walk(value, path, found, seen)
  local t = type(value)
  if t == "string" then
    scan_string(value, path, found)
  elseif t == "table" then
    if seen[value] then return end
    seen[value] = true
    for k, v in pairs(value) do
      if type(k) == "string" then scan_string(k, path .. "." .. k .. "(key)", found) end
      walk(v, path .. "." .. tostring(k), found, seen)
    end
  end
end

--- Every place in `value` (strings, nested tables, keys) that looks like a secret.
---@param value any
---@param root string|nil name of the value in the report (default "value")
---@return table findings list of `{path, kind}`
function M.find_secrets(value, root)
  check.arg("validate.find_secrets", "root", root, "string", true)
  local found = {}
  walk(value, root or "value", found, {})
  return found
end

--- Replaces secret-looking substrings of `s` with `***`.
---@param s string
---@return string
function M.redact(s)
  check.arg("validate.redact", "s", s, "string")
  for _, p in ipairs(M.SECRET_PATTERNS) do
    s = s:gsub(p.pattern, "***")
  end
  return s
end

--- True when the task lists `name` among its constraints.
---@param task table
---@param name string
---@return boolean
function M.has_constraint(task, name)
  check.arg("validate.has_constraint", "task", task, "table")
  check.arg("validate.has_constraint", "name", name, "string")
  for _, c in ipairs(task.constraints or {}) do
    if c == name then return true end
  end
  return false
end

return M
