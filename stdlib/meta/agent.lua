---@meta
-- Who this agent is, and how it ends.

---@class orrery.Agent
---@field id string This agent's id: `<role>-<n>` (`beta-1`).
---@field role string Its role: the script's file name (`beta` for `scripts/beta.lua`).
---@field task_id string The id of the task it works on.
agent = {}

--- Ends this agent once the current callback returns: no more messages or
--- watch events are delivered, `stop(self)` runs if the script has one, and
--- the agent moves to COMPLETE (unless it set another final phase itself).
--- Messages still queued for it are reported as undelivered.
function agent.finish() end

--- Keeps `value` as this agent's checkpoint in the store (replacing the
--- last one), so that after `orrery resume` the agent continues from it:
--- `on_resume(self, checkpoint)` gets it back. Pending writes are settled
--- first, so the checkpoint never runs ahead of what the agent wrote.
--- Raises when the value cannot be stored (function, userdata, cyclic table).
---@param value any JSON-like: nil, boolean, number, string, or a table of those
function agent.checkpoint(value) end

--- The shape of a role script: `scripts/<role>.lua` returns this table.
--- Every callback gets the agent's own state table as `self`; it is kept
--- across hot reloads.
---@class orrery.Role
---@field start? fun(self: table) Called once, first.
---@field on_message? fun(self: table, msg: orrery.Message) Each message no `bus.subscribe` handler took. An error gives the message back: it is redelivered, then dead-lettered after `max_attempts`.
---@field stop? fun(self: table) Called once when the agent ends normally (it finished, had nothing left to handle, or the task went quiet); not after an error or a timeout.
---@field on_reload? fun(self: table, old: orrery.Role) Called after new code of the role was loaded, with the old module.
---@field on_resume? fun(self: table, checkpoint: any) Called instead of `start` when `orrery resume` brings the agent back (its process was gone), with its last `agent.checkpoint` value (nil if none). Without it, `start` runs again.
