-- Beta, the executor: carries out each step Alpha sends, leaves an artifact per
-- step on the blackboard, reports back, and asks for validation when done.
-- A step whose action has no handler below is asked of the LLM when one is
-- configured (llm.available()), and its answer is also recorded as the output
-- "<step id>.<action>"; without an LLM, that step fails.
local prompt = require("prompt")
local validate = require("validate")

--- The executor's role table: the callbacks, and the step actions by name.
---@class orrery.Executor: orrery.Role
---@field actions table<string, fun(step: table): table>

---@type orrery.Executor
local M = {}

local EXECUTOR = [[You are the executor of a multi-agent system. Carry out the step you are
given for the task and answer with its result: what you did or produced, briefly.]]

-- Step actions by name. Each gets the step and returns the artifact's output
-- table, or raises. Add an action here (or in your own beta) to extend plans.
M.actions = {}

function M.actions.analyze(step)
  return {
    service = task.inputs.service or task.id,
    constraints = task.constraints,
    environment = task.inputs.environment or "sandbox",
  }
end

function M.actions.build(step)
  local service = task.inputs.service or task.id
  local version = task.inputs.version or "0.1.0"
  return { image = ("%s:%s"):format(service, version), layers = 3 }
end

function M.actions.configure(step)
  local config = {}
  for k, v in pairs(task.inputs.config or {}) do
    config[k] = v
  end
  -- Honour no-secrets: nothing secret-looking goes into the rendered config.
  if validate.has_constraint(task, "no-secrets") then
    for k, v in pairs(config) do
      if type(v) == "string" then config[k] = validate.redact(v) end
      if #validate.find_secrets({ [k] = v }) > 0 then config[k] = "***" end
    end
  end
  return { config = config }
end

-- The image `step` ships: the output of the last "build" step before it in
-- the plan, whatever that step's id or position (an LLM orders plans freely).
local function built_image(step)
  local p = blackboard.get("plan")
  local build_id
  for _, s in ipairs(p and p.steps or {}) do
    if s.id == step.id then break end
    if s.action == "build" then build_id = s.id end
  end
  local build = build_id and blackboard.get("artifacts/" .. build_id)
  return build and build.output and build.output.image or "unknown"
end

function M.actions.deploy(step)
  local target = task.inputs.environment or "sandbox"
  if validate.has_constraint(task, "sandbox-only") and target ~= "sandbox" then
    error(("constraint sandbox-only forbids deploying to '%s'"):format(target))
  end
  local replicas = task.inputs.replicas or 1
  local deployment = {
    target = target,
    image = built_image(step),
    replicas = replicas,
    url = ("http://%s.%s.local"):format(task.inputs.service or task.id, target),
  }
  task.output("deployment", deployment)
  return deployment
end

function M.actions.verify(step)
  local deployed = task.outputs().deployment
  if not deployed then error("nothing was deployed") end
  return { healthy = true, checked = deployed.url }
end

function M.actions.execute(step)
  return { done = true }
end

function M.actions.report(step)
  return { summary = ("%s finished"):format(task.id) }
end

-- Carries out a step no handler knows by asking the LLM; the answer is the result.
local function ask_llm(step)
  local text = ("The task:\n%s\n\nThe step: %s, action '%s': %s"):format(
    prompt.task(task), step.id, step.action, step.description)
  local answer = llm.chat({ system = EXECUTOR, prompt = text })
  local result = { answer = answer.content, model = answer.model, source = answer.source }
  -- What the LLM produced is a result of the run, not just an artifact.
  task.output(step.id .. "." .. step.action, result)
  return result
end

function M.start(self)
  -- Planning, for an executor, is getting ready to take steps: nothing done yet.
  state.set("PLANNING")
end

-- How many of the steps this agent carried out went well and how many
-- failed, from their artifacts: exact however often a step's message was
-- delivered, and across a resume (the blackboard outlives the process).
local function counts()
  local done, failed = 0, 0
  for _, key in ipairs(blackboard.keys("artifacts/")) do
    local artifact = blackboard.get(key)
    if artifact and artifact.produced_by == agent.id then
      if artifact.status == "ok" then done = done + 1 else failed = failed + 1 end
    end
  end
  return done, failed
end

local function run_step(self, msg)
  if state.get() ~= "EXECUTING" then state.set("EXECUTING") end
  local step = msg.payload.step
  local action = M.actions[step.action]
  local ok, output
  if action then
    ok, output = pcall(action, step)
  elseif llm.available() then
    ok, output = pcall(ask_llm, step)
  else
    ok, output = false, ("no action '%s' in beta.lua, and no LLM is configured to carry it out"
      .. " (see --llm-url, --llm-replay)"):format(step.action)
  end
  local artifact = {
    step = step.id,
    action = step.action,
    status = ok and "ok" or "failed",
    output = ok and output or nil,
    error = (not ok) and tostring(output) or nil,
    produced_by = agent.id,
  }
  blackboard.set("artifacts/" .. step.id, artifact)
  if ok then
    bus.send(msg.from, "step_done", { step = step.id })
  else
    log.warn("step " .. step.id .. " failed: " .. tostring(output))
    bus.send(msg.from, "step_failed", { step = step.id, error = tostring(output) })
  end
end

function M.on_message(self, msg)
  if msg.type == "step_ready" then
    run_step(self, msg)
  elseif msg.type == "plan_complete" then
    state.set("VALIDATING")
    local total = msg.payload.total
    local done, failed = counts()
    local confidence = total > 0 and done / total or 0
    task.output("execution", { steps = total, done = done, failed = failed })
    spawn.signal("VALIDATION_NEEDED", confidence)
    agent.finish()
  end
end

return M
