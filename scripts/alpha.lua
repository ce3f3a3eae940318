-- Alpha, the planner: turns the task into an ordered plan on the blackboard,
-- hands each step to Beta over the bus, and follows Beta's progress reports.
local plan = require("plan")

local M = {}

function M.start(self)
  state.set("PLANNING")
  local p = plan.for_task(task)
  local ok, why = plan.validate(p)
  if not ok then error("alpha produced an invalid plan: " .. why) end

  blackboard.set("plan", p)
  task.output("plan", { source = "rules", steps = #p.steps })
  log.info(("planned %d steps for %s"):format(#p.steps, task.id))

  state.set("EXECUTING")
  self.remaining = #p.steps
  self.failed = {}
  for i, step in ipairs(p.steps) do
    bus.send("beta", "step_ready", { step = step, index = i, total = #p.steps })
  end
  bus.send("beta", "plan_complete", { total = #p.steps })
end

function M.on_message(self, msg)
  if msg.type == "step_done" then
    self.remaining = self.remaining - 1
    metrics.incr("steps_reported")
  elseif msg.type == "step_failed" then
    self.remaining = self.remaining - 1
    self.failed[#self.failed + 1] = msg.payload.step .. ": " .. msg.payload.error
  end
  if self.remaining == 0 then
    state.set("VALIDATING")
    if #self.failed > 0 then
      state.set("FAILED", "steps failed: " .. table.concat(self.failed, "; "))
    end
    agent.finish()
  end
end

return M
