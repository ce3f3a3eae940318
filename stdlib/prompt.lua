--- Building blocks of LLM prompts for `llm.chat`: the task as text, and plain
--- copies of values for `json.encode`.
local check = require("check")

local M = {}

--- A deep copy of `value` read through `pairs`, without metatables. The
--- read-only `task` tables are proxies that `json.encode` sees as empty;
--- their plain copies encode in full.
---@param value any
---@return any
function M.plain(value)
  if type(value) ~= "table" then return value end
  local copy = {}
  for k, v in pairs(value) do copy[k] = M.plain(v) end
  return copy
end

--- The task as prompt text: its id, type, description, constraints and
--- inputs (as JSON), one per line.
---@param task table the task (the global `task`)
---@return string
function M.task(task)
  check.arg("prompt.task", "task", task, "table")
  return ("id: %s\ntype: %s\ndescription: %s\nconstraints: %s\ninputs: %s"):format(
    tostring(task.id),
    tostring(task.type),
    tostring(task.description),
    json.encode(M.plain(task.constraints or {})),
    json.encode(M.plain(task.inputs or {}))
  )
end

return M
