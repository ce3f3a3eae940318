-- Every period, hands the next name to the greeter pool. Change the period
-- or what it sends and save: the timer calls M.tick by name, so each round
-- runs the code current at that moment.
---@class Clock: orrery.Role
---@field tick fun(self: table) One round: sends the next name.
---@type Clock
local M = {}

function M.start(self)
  self.n = 0
  every(task.inputs.period_ms, "tick")
end

function M.tick(self)
  self.n = self.n + 1
  local names = task.inputs.names
  bus.send("greeter", "greet", { n = self.n, name = names[(self.n - 1) % #names + 1] })
end

return M
