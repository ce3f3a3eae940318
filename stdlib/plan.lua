--- Execution plans: build, check and look up the steps an executor carries out.
--- A plan is `{ steps = { {id = "step-1", action = "analyze", description = "..."}, ... } }`;
--- steps may carry extra fields.
local check = require("check")

local M = {}

--- The actions a rule-based plan uses for each task type.
M.RULES = {
  deployment = {
    { "analyze", "Analyse the service and its constraints" },
    { "build", "Build the release artifact" },
    { "configure", "Render the runtime configuration" },
    { "deploy", "Roll the release out to the target environment" },
    { "verify", "Check the deployment answers its health check" },
  },
  default = {
    { "analyze", "Analyse the task" },
    { "execute", "Carry the task out" },
    { "report", "Summarise the results" },
  },
}

--- Builds one step.
---@param id string
---@param action string
---@param description? string defaults to the action
---@return table step
function M.step(id, action, description)
  check.arg("plan.step", "id", id, "string")
  check.arg("plan.step", "action", action, "string")
  check.arg("plan.step", "description", description, "string", true)
  return { id = id, action = action, description = description or action }
end

--- The rule-based plan for a task: steps chosen by `task.type`.
---@param task table the task (needs `type`)
---@return table plan
function M.for_task(task)
  check.arg("plan.for_task", "task", task, "table")
  local rules = M.RULES[task.type] or M.RULES.default
  local steps = {}
  for i, rule in ipairs(rules) do
    steps[i] = M.step(("step-%d"):format(i), rule[1], rule[2])
  end
  return { steps = steps, task_id = task.id }
end

--- Checks that a value is a well-formed plan: a non-empty `steps` list whose
--- entries have string `id`, `action` and `description`, ids unique.
---@param plan any
---@return boolean ok
---@return string|nil reason why it is not
function M.validate(plan)
  if type(plan) ~= "table" then return false, "plan is a " .. type(plan) .. ", not a table" end
  local steps = plan.steps
  if type(steps) ~= "table" or #steps == 0 then return false, "plan has no steps list" end
  local seen = {}
  for i, step in ipairs(steps) do
    if type(step) ~= "table" then return false, ("step %d is not a table"):format(i) end
    for _, field in ipairs({ "id", "action", "description" }) do
      if type(step[field]) ~= "string" or step[field] == "" then
        return false, ("step %d has no string '%s'"):format(i, field)
      end
    end
    if seen[step.id] then return false, ("step id '%s' appears twice"):format(step.id) end
    seen[step.id] = true
  end
  return true
end

--- Finds a step by id.
---@param plan table
---@param id string
---@return table|nil step
function M.find(plan, id)
  check.arg("plan.find", "plan", plan, "table")
  check.arg("plan.find", "id", id, "string")
  for _, step in ipairs(plan.steps or {}) do
    if step.id == id then return step end
  end
  return nil
end

return M
