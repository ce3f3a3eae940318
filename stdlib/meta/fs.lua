---@meta
-- Files below the directory granted by `[roles.<role>.capabilities] read_files = "DIR"`
-- in orrery.toml. Without the grant every call raises, saying how to grant it.
fs = {}

--- Text of `path`, relative to the granted directory (`..`, absolute paths and
--- symlinks out of it are refused). Only regular files are read (a FIFO, device
--- or socket raises at once), never below /proc, /sys or /dev, never the LLM key
--- file. Raises when the file is larger than max_value_bytes.
---@param path string
---@return string
function fs.read(path) end

--- Sorted names of the entries (files and directories) in `dir`, relative to
--- the granted directory (default: the granted directory itself). Raises when
--- the names together pass max_value_bytes.
---@param dir? string
---@return string[]
function fs.list(dir) end
