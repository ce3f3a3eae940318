--- Argument checks for the public functions of Lua modules, as Neovim's
--- `vim.validate`: one call per argument, first thing in the function, and an
--- error that names the function, the argument, what it wants and what it got,
--- at the line that called the function:
---
---     local check = require("check")
---     function M.step(id, action)
---       check.arg("plan.step", "id", id, "string")
---       ...
---     end
---     -- plan.step(1, "x") raises "init.lua:7: plan.step: expected string 'id', got number"
local M = {}

--- What an argument may be: a type name as `type` returns it (`"string"`,
--- `"table"`, ...), `"callable"` (a function or a table with `__call`),
--- `"integer"` (a whole number), a list of those, or a function that
--- returns true when it accepts the value (or false and what it expected).
---@alias check.Expected type|"callable"|"integer"|(type|"callable"|"integer")[]|fun(value: any): boolean, string?

local function is(value, name)
  local t = type(value)
  if name == "callable" then
    if t == "function" then return true end
    local mt = t == "table" and getmetatable(value)
    return type(mt) == "table" and type(mt.__call) == "function"
  elseif name == "integer" then
    return math.type(value) == "integer"
      or (t == "number" and value == math.floor(value) and math.abs(value) ~= math.huge)
  end
  return t == name
end

--- True when `value` is what `expected` says; else false and the expectation
--- as words (`"string or table"`).
---@param value any
---@param expected check.Expected
---@return boolean ok
---@return string? wanted
local function accepts(value, expected)
  local kind = type(expected)
  if kind == "string" then
    return is(value, expected), expected
  elseif kind == "table" then
    for _, name in ipairs(expected) do
      if is(value, name) then return true end
    end
    return false, table.concat(expected, " or ")
  elseif kind == "function" then
    local ok, wanted = expected(value)
    return ok and true or false, wanted or "a valid value"
  end
  error(("check.arg: expected a type name, a list of them or a function as 'expected', got %s")
    :format(kind), 3)
end

--- Raises `"<fname>: expected <what> '<name>', got <type>"` at the line that
--- called `fname`, unless `value` is what `expected` says (or is nil and
--- `optional` is true).
---@param fname string the public function as its callers write it (`plan.step`)
---@param name string the argument (`id`, or `opts.attempts` for a field)
---@param value any
---@param expected check.Expected
---@param optional? boolean nil is accepted too
function M.arg(fname, name, value, expected, optional)
  if value == nil and optional then return end
  local ok, wanted = accepts(value, expected)
  if not ok then
    error(("%s: expected %s '%s', got %s"):format(fname, wanted, name, type(value)), 3)
  end
end

return M
