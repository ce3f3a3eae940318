---@meta
-- Programs granted by `[roles.<role>.capabilities] commands = ["echo", ...]`
-- in orrery.toml. Without the grant every call raises, saying how to grant it.
exec = {}

---@class orrery.ExecOptions
---@field timeout? integer ms before the program is killed and the call raises (default 10000)
---@field stdin? string written to the program's standard input

---@class orrery.ExecResult
---@field status integer|nil exit status; nil when a signal killed it
---@field ok boolean status == 0
---@field stdout string
---@field stderr string

--- Runs a granted program directly (no shell), with an empty environment but
--- PATH. Raises for a program not granted, on its timeout, or when its output
--- passes max_value_bytes. The program runs in a process group of its own,
--- killed whole when the call ends (the program's exit included): nothing it
--- started in the background outlives the call.
---@param cmd string
---@param args? string[]
---@param opts? orrery.ExecOptions
---@return orrery.ExecResult
function exec.run(cmd, args, opts) end
