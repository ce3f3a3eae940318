-- Greets whoever the clock sends. Edit the greeting and save: the next
-- message is handled by the new code, and `self.greeted` keeps counting.
---@type orrery.Role
local M = {}

function M.on_message(self, msg)
  self.greeted = (self.greeted or 0) + 1
  local line = string.format("hello, %s", msg.payload.name)
  log.info(string.format("#%d %s (%s has greeted %d)", msg.payload.n, line, agent.id, self.greeted))
  blackboard.set("last_greeting", { n = msg.payload.n, line = line, by = agent.id })
end

return M
