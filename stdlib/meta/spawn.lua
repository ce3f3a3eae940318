---@meta
-- Starting agents. At most `max_agents` agents are live at once; a spawn
-- beyond raises a SpawnLimit error naming the role and the limit (exit code 6
-- if uncaught). A spawn waits for the new agent at most `spawn_timeout` ms.
-- Each call waits while other agents run.

---@class orrery.SpawnCondition
---@field trigger string Signal name.
---@field threshold number The agent starts when a signal's value is >= this.
---@field agent string Role to start.
---@field repeat? boolean Start one on every qualifying signal, not only the first (write `["repeat"] = true`: `repeat` is a Lua keyword).

spawn = {}

--- Registers a condition, as the task file's `[[spawn]]` tables do. Returns
--- true when it added it, false when an identical condition (same trigger,
--- threshold, agent and repeat) was registered already: that one is kept, so
--- registering at a role's top level (run at every spawn and reload) adds it
--- once. Raises on a malformed table, a role with no script, or past
--- `max_spawn_conditions`.
---@param condition orrery.SpawnCondition
---@return boolean added
function spawn.when(condition) end

--- Reports `value` for `trigger`: every condition on that trigger whose
--- threshold it reaches starts its role (once per condition across the whole
--- task, unless the condition repeats). Returns the ids of the agents started.
---@param trigger string
---@param value number
---@return string[] started
function spawn.signal(trigger, value) end

--- Starts an agent of `role` now (any `scripts/<role>.lua`); returns its id
--- once it is created. Raises for a role with no script, or SpawnLimit
--- (`max_agents` live, or `max_spawns` started over the task's run).
---@param role string
---@return string id
function spawn.agent(role) end

--- Waits until an agent has ended (a join): returns its final phase,
--- `"COMPLETE"` or `"FAILED"`; given a list of ids, waits for each and
--- returns their phases in the same order. Raises when one has not ended
--- within `timeout_ms` (default: as long as it takes; the task's timeout
--- still bounds it). An agent with message handlers ends when it calls
--- `agent.finish()` (or the task ends), so tell it to.
---@overload fun(ids: string[], timeout_ms?: number): string[]
---@param id string
---@param timeout_ms? number
---@return string phase
function spawn.wait(id, timeout_ms) end
