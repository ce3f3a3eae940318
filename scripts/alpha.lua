-- Alpha, the planner: turns the task into an ordered plan on the blackboard,
-- hands each step to Beta over the bus, and follows Beta's progress reports.
-- With an LLM configured (llm.available()) it asks the LLM for the plan and
-- falls back to the rule-based planner when the answer is unusable.
local plan = require("plan")
local prompt = require("prompt")

---@type orrery.Role
local M = {}

local PLANNER = [[You are the planner of a multi-agent system. Answer with one JSON object and
nothing else, of the form {"steps": [{"id": "step-1", "action": "analyze", "description": "..."}]}.
Step ids are unique. An action is one lower-case word; prefer those the executor knows:
analyze, build, configure, deploy, verify, execute, report.]]

-- The LLM's plan, or nil and why it can't be used.
local function llm_plan()
  local ok, answer = pcall(llm.chat, {
    system = PLANNER,
    prompt = "Plan this task.\n" .. prompt.task(task),
    json = true,
    temperature = 0,
  })
  if not ok then
    if type(answer) == "table" then
      return nil, ("the LLM call failed (%s): %s"):format(answer.kind, answer.message)
    end
    return nil, tostring(answer)
  end
  if answer.json == nil then return nil, answer.json_error end
  local valid, why = plan.validate(answer.json)
  if not valid then return nil, "the LLM's plan is invalid: " .. why end
  return { steps = answer.json.steps, task_id = task.id }, answer.model
end

-- The plan to follow and where it came from: "llm", "fallback" (the LLM's
-- answer was unusable, `reason` says why) or "rules" (no LLM configured).
local function make_plan()
  if llm.available() then
    local p, model_or_reason = llm_plan()
    if p then return p, { source = "llm", model = model_or_reason } end
    log.warn("LLM plan unusable, using the rule-based planner: " .. model_or_reason)
    return plan.for_task(task), { source = "fallback", reason = model_or_reason }
  end
  return plan.for_task(task), { source = "rules" }
end

function M.start(self)
  state.set("PLANNING")
  local p, origin = make_plan()
  local ok, why = plan.validate(p)
  if not ok then error("alpha produced an invalid plan: " .. why) end

  blackboard.set("plan", p)
  origin.steps = #p.steps
  task.output("plan", origin)
  task.output("plan_steps", p.steps)
  log.info(("planned %d steps for %s (%s)"):format(#p.steps, task.id, origin.source))

  state.set("EXECUTING")
  for i, step in ipairs(p.steps) do
    bus.send("beta", "step_ready", { step = step, index = i, total = #p.steps })
  end
  bus.send("beta", "plan_complete", { total = #p.steps })
  -- What a resume needs: the plan is out, and which steps were reported.
  self.steps, self.reported = p.steps, {}
  agent.checkpoint({ reported = self.reported })
end

-- Ends once every step of the plan was reported, failing if any failed.
local function finish_when_reported(self)
  local failed = {}
  for _, step in ipairs(self.steps) do
    local report = self.reported[step.id]
    if report == nil then return end
    if report ~= true then failed[#failed + 1] = step.id .. ": " .. report end
  end
  state.set("VALIDATING")
  if #failed > 0 then
    state.set("FAILED", "steps failed: " .. table.concat(failed, "; "))
  end
  agent.finish()
end

function M.on_message(self, msg)
  local step = msg.payload.step
  if msg.type ~= "step_done" and msg.type ~= "step_failed" then return end
  -- A report delivered again (after a process was lost) changes nothing.
  if self.reported[step] ~= nil then return end
  if msg.type == "step_done" then
    self.reported[step] = true
    metrics.incr("steps_reported")
  else
    self.reported[step] = msg.payload.error
  end
  agent.checkpoint({ reported = self.reported })
  finish_when_reported(self)
end

-- Brought back after its process was lost: with the plan out, it goes on
-- counting reports from its checkpoint; cut off before, it plans again.
function M.on_resume(self, checkpoint)
  local p = blackboard.get("plan")
  if not (checkpoint and p) then return M.start(self) end
  self.steps, self.reported = p.steps, checkpoint.reported or {}
  finish_when_reported(self)
end

return M
