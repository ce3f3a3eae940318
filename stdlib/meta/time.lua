---@meta
-- Time. `sleep` and `now` are also globals.

time = {}

--- Waits `ms` milliseconds; only this agent waits, the others run. Cannot
--- be called from inside a C function (a `table.sort` comparator, a
--- `string.gsub` replacement function).
---@param ms number
function time.sleep(ms) end

--- Milliseconds since the Unix epoch, with sub-millisecond precision.
---@return number
function time.now() end

--- Same as `time.sleep`.
---@param ms number
function sleep(ms) end

--- Same as `time.now`.
---@return number
function now() end
