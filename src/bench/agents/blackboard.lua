-- orrery bench: blackboard.set then blackboard.get in a loop over 64 keys; reports the loop time.
local M = {}
function M.start(self)
  local set, get = blackboard.set, blackboard.get
  local keys = {}
  for i = 1, 64 do keys[i] = "bench/key-" .. i end
  for i = 1, 2000 do set(keys[i % 64 + 1], i); get(keys[i % 64 + 1]) end -- warm-up
  local loops = task.inputs.loops
  local t0 = now()
  for i = 1, loops do
    local k = keys[i % 64 + 1]
    set(k, i)
    get(k)
  end
  task.output("elapsed_ms", now() - t0)
end
return M
