-- orrery bench: an idle agent (it has a handler and waits); adds its Lua heap to a counter.
local M = {}
function M.start(self)
  if collectgarbage then
    collectgarbage("collect")
    metrics.incr("lua_heap_bytes", math.floor(collectgarbage("count") * 1024))
  end
end
function M.on_message(self, msg) end
return M
