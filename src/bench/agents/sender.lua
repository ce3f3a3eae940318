-- orrery bench: once the receiver is ready, sends it the start time, then N messages.
local M = {}
function M.start(self)
  assert(bus.receive(60000), "the receiver never got ready")
  local send, n = bus.send, task.inputs.messages
  send("receiver", "start", now())
  for i = 1, n do send("receiver", "m", i) end
end
return M
