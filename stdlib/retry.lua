--- Retry a function with exponential backoff (sleeps block only the calling agent).
local check = require("check")

local M = {}

--- Calls `fn` until it succeeds or `opts.attempts` calls failed.
--- Returns what `fn` returns; re-raises the last error.
---@param fn function
---@param opts table|nil `{attempts = 3, delay = 50 (ms), factor = 2, max_delay = 2000}`
---@return any ...
function M.call(fn, opts)
  check.arg("retry.call", "fn", fn, "function")
  check.arg("retry.call", "opts", opts, "table", true)
  opts = opts or {}
  for _, field in ipairs({ "attempts", "delay", "factor", "max_delay" }) do
    check.arg("retry.call", "opts." .. field, opts[field], "number", true)
  end
  local attempts = opts.attempts or 3
  local delay = opts.delay or 50
  local factor = opts.factor or 2
  local max_delay = opts.max_delay or 2000
  local last
  for attempt = 1, attempts do
    local result = table.pack(pcall(fn, attempt))
    if result[1] then return table.unpack(result, 2, result.n) end
    last = result[2]
    if attempt < attempts then
      sleep(delay)
      delay = math.min(delay * factor, max_delay)
    end
  end
  error(last, 0)
end

return M
