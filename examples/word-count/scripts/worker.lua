-- Counts the words of each document it is handed; several can run at once.
---@type orrery.Role
local M = {}

function M.start(self)
  state.set("EXECUTING")
end

function M.on_message(self, msg)
  if msg.type == "count" then
    local words = 0
    for _ in msg.payload.text:gmatch("%S+") do words = words + 1 end
    metrics.incr("documents_counted")
    bus.send(msg.from, "counted", { doc = msg.payload.doc, words = words, by = agent.id })
  elseif msg.type == "done" then
    agent.finish()
  end
end

return M
