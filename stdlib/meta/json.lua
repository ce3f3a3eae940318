---@meta
-- JSON text <-> Lua values.

---@class orrery.JsonEncodeOptions
---@field pretty? boolean Indent the output.

json = {}

--- The JSON text of `value`. Raises, naming `json.encode`, on a value JSON
--- cannot hold (function, coroutine, userdata, cyclic table).
---@param value any
---@param opts? orrery.JsonEncodeOptions
---@return string
function json.encode(value, opts) end

--- The Lua value of JSON `text` (a JSON null inside arrays and objects
--- becomes `json.null`). Raises on malformed JSON.
---@param text string
---@return any
function json.decode(text) end

--- Stands for JSON null where nil cannot (inside lists).
---@type lightuserdata
json.null = nil
