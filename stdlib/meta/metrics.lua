---@meta
-- Custom counters, reported under `metrics.custom` beside the built-in
-- coordination metrics. Counters are shared by all agents of the task.

metrics = {}

--- Adds `n` (default 1) to counter `name`; returns the new value. A name is 1
--- to 512 bytes without control characters; a task has at most `max_metrics`
--- names (raises beyond).
---@param name string
---@param n? integer
---@return integer
function metrics.incr(name, n) end

--- The value of counter `name` (0 when never incremented).
---@param name string
---@return integer
function metrics.get(name) end

--- The metrics of the run so far, in the report's shape: `task_id`,
--- `start_time`, `agent_metrics` (per agent: `messages_sent`,
--- `messages_received`, `errors`; `phases` is filled in the final report
--- only), `blackboard_writes`, `blackboard_reads`, `spawn_events`, `custom`,
--- and the host's own counters under `host`.
---@return table
function metrics.snapshot() end
