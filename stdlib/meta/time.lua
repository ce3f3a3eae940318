---@meta
-- Time and timers. `sleep`, `now`, `every` and `after` are also globals.

time = {}

--- Waits `ms` milliseconds; only this agent waits, the others run. Cannot
--- be called from inside a C function (a `table.sort` comparator, a
--- `string.gsub` replacement function). The agent does not take new code
--- while it waits: for periodic work use `every`, which returns to the host
--- between rounds.
---@param ms number
function time.sleep(ms) end

--- Milliseconds since the Unix epoch, with sub-millisecond precision.
---@return number
function time.now() end

--- Calls `fn` every `ms` milliseconds (at least 1) as a callback of its own,
--- between the agent's other callbacks: under the callback budget, and with
--- new code taken before each round (hot reload). Given the name of a
--- function of the role's module (`every(1000, "tick")`), each round calls
--- `M.tick(self)` of the current code; a function given here is kept as it
--- is (the code that made it). A name the module does not define as a
--- function raises at the call (at a top level, where the module is not
--- returned yet, it is checked at each round). A round that raises is lost
--- work, as a watch callback that raised: it fails the run unless the task's
--- `[success]` table has `allow_dead_letters = true`, and the next round still
--- runs. An agent with a timer keeps running (and the task does not go
--- quiet) until the timer is cancelled or the agent finishes. Returns the
--- timer's id.
---@param ms number
---@param fn fun()|string
---@return integer id
function time.every(ms, fn) end

--- Calls `fn` once, `ms` milliseconds from now, as a callback of its own
--- (see `time.every`: a name is checked the same way, and a raise is lost
--- work). Returns the timer's id.
---@param ms number
---@param fn fun()|string
---@return integer id
function time.after(ms, fn) end

--- Cancels a timer set with `every` or `after`; true when it was still set.
---@param id integer
---@return boolean cancelled
function time.cancel(id) end

--- Same as `time.sleep`.
---@param ms number
function sleep(ms) end

--- Same as `time.now`.
---@return number
function now() end

--- Same as `time.every`.
---@param ms number
---@param fn fun()|string
---@return integer id
function every(ms, fn) end

--- Same as `time.after`.
---@param ms number
---@param fn fun()|string
---@return integer id
function after(ms, fn) end
