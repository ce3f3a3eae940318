---@meta
-- Agent phases: INIT -> READY -> PLANNING -> EXECUTING -> VALIDATING ->
-- COMPLETE, and FAILED from any phase. Phases only move forward (skipping is
-- allowed); COMPLETE and FAILED are final. The host moves an agent to READY
-- before `start`, and to COMPLETE (or FAILED with the error) when it ends.

---@alias orrery.Phase "INIT"|"READY"|"PLANNING"|"EXECUTING"|"VALIDATING"|"COMPLETE"|"FAILED"

---@class orrery.PhaseEntry
---@field phase orrery.Phase
---@field at integer When it was entered (ms since the Unix epoch).

---@class orrery.AgentInfo
---@field id string
---@field role string
---@field phase orrery.Phase
---@field host string Host name of the process running it.
---@field error? string Why it failed, when it did.

state = {}

--- Moves this agent to `phase` (names are case-insensitive). Moving to FAILED
--- fails the task (exit code 7), with `reason` in the report. Raises on an
--- unknown phase name, or on an illegal move (backwards, to the same phase, or
--- out of COMPLETE/FAILED), naming both phases. An agent resumed after its
--- process was lost replays: until it moves past the phase it was resumed in,
--- setting that phase or an earlier one does nothing.
---@param phase orrery.Phase
---@param reason? string
function state.set(phase, reason) end

--- The phase of agent `id` (default: this agent), or nil for an unknown agent.
---@param id? string
---@return orrery.Phase|nil
function state.get(id) end

--- Every phase agent `id` (default: this agent) entered, oldest first.
--- Raises for an unknown agent.
---@param id? string
---@return orrery.PhaseEntry[]
function state.history(id) end

--- Every agent of the task (of `role` only, when given), sorted by id,
--- ended ones included (see `phase`).
---@param role? string
---@return orrery.AgentInfo[]
function state.agents(role) end
