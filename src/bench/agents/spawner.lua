-- orrery bench: spawns probes one at a time; reports each time from spawn.agent to the probe's start.
local M = {}
function M.start(self)
  local samples, warmup = {}, task.inputs.warmup
  for i = 1, warmup + task.inputs.spawns do
    local t0 = now()
    spawn.agent("probe")
    local up = assert(bus.receive(60000), "a probe never started")
    if i > warmup then samples[#samples + 1] = up.payload - t0 end
  end
  task.output("samples_ms", samples)
end
return M
