---@meta
-- HTTP to the hosts granted by `[roles.<role>.capabilities] http = ["HOST:PORT", ...]`
-- in orrery.toml. Without the grant every call raises, saying how to grant it.
http = {}

---@class orrery.HttpOptions
---@field headers? table<string, string>
---@field timeout? integer ms (default 10000)

---@class orrery.HttpResponse
---@field status integer
---@field body string
---@field headers table<string, string> lower-case names

--- GET an http:// or https:// URL on a granted host; redirects are not
--- followed. An HTTP error status is returned, not raised; a response body
--- larger than max_value_bytes raises.
---@param url string
---@param opts? orrery.HttpOptions
---@return orrery.HttpResponse
function http.get(url, opts) end

--- POST `body` to a granted host: a string is sent as text/plain, a table as
--- JSON. A body larger than max_value_bytes raises before anything is sent.
---@param url string
---@param body string|table
---@param opts? orrery.HttpOptions
---@return orrery.HttpResponse
function http.post(url, body, opts) end
