---@meta
-- LuaLS annotations of the `llm` table (the host implements it in
-- src/lua_api/llm.rs). The API key never reaches scripts.

---LLM access: chat with the configured OpenAI-compatible endpoint, a replay
---file, or the offline mock responder.
---@class llm
llm = {}

---One message of a conversation.
---@class llm.Message
---@field role "system"|"user"|"assistant"|string
---@field content string

---Options of `llm.chat`. Give `prompt` or `messages` (not both); unknown
---options are an error.
---@class llm.ChatOptions
---@field prompt? string shorthand for `messages = {{role = "user", content = prompt}}`
---@field messages? llm.Message[] the conversation (non-empty)
---@field system? string a system message put first
---@field model? string model for this call (default: `--model`, `[llm] model`, `ORRERY_LLM_MODEL`)
---@field temperature? number sampling temperature (>= 0), sent only when given
---@field max_tokens? integer completion length limit (>= 1), sent only when given
---@field json? boolean ask for a JSON object; the result's `json` holds it decoded
---@field timeout? integer ms for the whole call, retries included (default `[llm] timeout_ms`, 60000)

---Token counts of one answer.
---@class llm.Usage
---@field prompt_tokens integer
---@field completion_tokens integer
---@field total_tokens integer

---What `llm.chat` returns.
---@class llm.Result
---@field content string the answer text
---@field model string the model that answered, as the source reports it
---@field source "api"|"mock"|"replay" who answered
---@field usage llm.Usage token counts (reported, or estimated as characters / 4)
---@field json? any with `json = true`: the answer decoded (a Markdown code fence around it is removed)
---@field json_error? string with `json = true`: why the answer did not decode

---The error `llm.chat` raises when a call fails. `tostring(err)` gives
---`"path:line: llm.chat failed (kind): message"`.
---@class llm.Error
---@field kind "timeout"|"rate_limited"|"http"|"malformed"|"budget"|"replay"|"config"
---@field message string what happened, naming the endpoint or file
---@field status? integer the HTTP status, for `kind == "http"` when a response arrived
---@field where? string `path:line` of the script line that called `llm.chat`

---Asks the model. Blocks only the calling agent (so do not call it from a
---`table.sort` comparator or a `string.gsub` callback). 429, 5xx and
---connection errors are retried with backoff (honouring `Retry-After`) within
---the timeout. A failure raises an `llm.Error`; catch it with `pcall`:
---
---```lua
---local ok, res = pcall(llm.chat, { prompt = "Summarise: " .. text, timeout = 5000 })
---if not ok and res.kind == "timeout" then ... end
---```
---
---Argument errors (a wrong type, an unknown option) raise a string naming
---the option. When the task's token budget is spent, the call raises kind
---`"budget"` and the task fails (exit code 8) even if the error is caught.
---@param opts llm.ChatOptions
---@return llm.Result
function llm.chat(opts) end

---Which answerer is configured: `"live"` (an endpoint), `"replay"` (a
---replay file) or `"mock"` (the offline deterministic responder).
---@return "live"|"replay"|"mock"
function llm.mode() end

---`true` when a real answerer is configured (live or replay), `false` for
---the mock: agents ask the LLM for real work only when this is true.
---@return boolean
function llm.available() end
