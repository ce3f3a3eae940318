---@meta
-- Files below the directory granted by `[roles.<role>.capabilities] read_files = "DIR"`
-- in orrery.toml. Without the grant every call raises, saying how to grant it.
fs = {}

--- Text of `path`, relative to the granted directory (`..`, absolute paths and
--- symlinks out of it are refused). Raises when the file is larger than max_value_bytes.
---@param path string
---@return string
function fs.read(path) end

--- Sorted names of the entries (files and directories) in `dir`, relative to
--- the granted directory (default: the granted directory itself).
---@param dir? string
---@return string[]
function fs.list(dir) end
