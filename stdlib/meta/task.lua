---@meta
-- The task being run, as the task file gave it. Read-only: assigning to any
-- field raises "task is read-only (tried to set 'x')".

---@class orrery.Task
---@field id string Unique id; names every store key of the task.
---@field type string Kind of task (`deployment`, ...), chosen by the task file.
---@field description string Human description.
---@field constraints string[] Rules the agents must honour (`sandbox-only`, `no-secrets`, ...).
---@field timeout integer Time the whole task may take (ms).
---@field inputs table<string, any> Free-form inputs from the task file's `[inputs]`.
task = {}

--- Records an output of the run (shown in the report's `outputs`). Outputs
--- are blackboard keys `outputs/<name>`, so every agent and host sees them;
--- writing again replaces the value, and nil removes it.
--- Raises when the value cannot be stored (function, coroutine, userdata,
--- cyclic table) or is larger than `max_value_bytes`.
---@param name string
---@param value any JSON-like: nil, boolean, number, string, or a table of those
function task.output(name, value) end

--- Every output recorded so far, by name.
---@return table<string, any>
function task.outputs() end
