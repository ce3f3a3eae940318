-- orrery bench --redis: one agent, blackboard.set then blackboard.get. With
-- `elsewhere`, the get reads a key the agent did not write, so every get asks
-- the server (the agent's own writes are read back without asking).
local M = {}
function M.start(self)
  local n, elsewhere = task.inputs.pairs, task.inputs.elsewhere
  local set, get = blackboard.set, blackboard.get
  local t0 = now()
  if elsewhere then
    for i = 1, n do
      set("bench/seq", i)
      if get("bench/elsewhere") ~= nil then error("bench/elsewhere was written") end
    end
  else
    for i = 1, n do
      set("bench/seq", i)
      if get("bench/seq") ~= i then error("read back a stale value at " .. i) end
    end
  end
  task.output("timing/" .. agent.id, { start = t0, stop = now(), ops = 2 * n })
end
return M
