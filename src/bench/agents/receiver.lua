-- orrery bench: takes N messages with bus.receive; reports the time since the sender started.
local M = {}
function M.start(self)
  bus.send("sender", "ready", {})
  local receive, n = bus.receive, task.inputs.messages
  local t0 = assert(receive(60000), "the sender never started").payload
  for i = 1, n do
    if receive(60000) == nil then error("message " .. i .. " never arrived") end
  end
  task.output("elapsed_ms", now() - t0)
end
return M
