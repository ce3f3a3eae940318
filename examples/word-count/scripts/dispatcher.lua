-- Sends each document to the worker pool and adds up what comes back.
---@type orrery.Role
local M = {}

function M.start(self)
  state.set("PLANNING")
  local docs = task.inputs.documents
  state.set("EXECUTING")
  for i, text in ipairs(docs) do
    bus.send("worker", "count", { doc = i, text = text })
  end
end

function M.on_message(self, msg)
  if msg.type ~= "counted" then return end
  blackboard.set("counts/" .. msg.payload.doc, msg.payload.words)
  blackboard.update("handled_by/" .. msg.payload.by, function(n) return (n or 0) + 1 end)
  -- Done when every document has a count: exact even when a count arrives
  -- twice (a message delivered again after a process was lost).
  if #blackboard.keys("counts/") < #task.inputs.documents then return end

  local total = 0
  for _, key in ipairs(blackboard.keys("counts/")) do
    total = total + blackboard.get(key)
  end
  local by = {}
  for _, key in ipairs(blackboard.keys("handled_by/")) do
    by[key:sub(#"handled_by/" + 1)] = blackboard.get(key)
  end
  task.output("total_words", total)
  task.output("documents_by_worker", by)
  bus.broadcast("done", {})
  agent.finish()
end

return M
