---@meta
-- Logging to the host's stderr, tagged with the agent id. Values are
-- converted with `tostring` and joined with spaces. Each call is one line:
-- newlines and other control characters are written as escapes (`\n`), and a
-- line is cut at 16 KiB. The level shown is set by `ORRERY_LOG` (default: info
-- for scripts).

log = {}

---@param ... any
function log.debug(...) end

---@param ... any
function log.info(...) end

---@param ... any
function log.warn(...) end

---@param ... any
function log.error(...) end
