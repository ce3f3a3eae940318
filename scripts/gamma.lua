-- Gamma, the validator: started by the VALIDATION_NEEDED condition; checks
-- Beta's artifacts against the plan and the task's constraints, records the verdict.
local validate = require("validate")

local M = {}

function M.start(self)
  -- Planning: what is there to check?
  state.set("PLANNING")
  local p = blackboard.get("plan")
  local problems = {}
  if not p then problems[1] = "no plan on the blackboard" end

  -- Executing: check every step's artifact.
  state.set("EXECUTING")
  for _, step in ipairs(p and p.steps or {}) do
    local artifact = blackboard.get("artifacts/" .. step.id)
    if not artifact then
      problems[#problems + 1] = step.id .. ": no artifact"
    elseif artifact.status ~= "ok" then
      problems[#problems + 1] = step.id .. ": " .. tostring(artifact.error)
    end
  end

  -- Validating: hold the whole run against the task's constraints.
  state.set("VALIDATING")

  if validate.has_constraint(task, "no-secrets") then
    for _, key in ipairs(blackboard.keys("")) do
      for _, found in ipairs(validate.find_secrets(blackboard.get(key), key)) do
        problems[#problems + 1] = ("secret-looking %s at %s"):format(found.kind, found.path)
      end
    end
  end

  if validate.has_constraint(task, "sandbox-only") then
    local deployed = task.outputs().deployment
    if deployed and deployed.target ~= "sandbox" then
      problems[#problems + 1] = "deployed outside the sandbox: " .. tostring(deployed.target)
    end
  end

  local verdict = { passed = #problems == 0, problems = problems, validated_by = agent.id }
  blackboard.set("validation", verdict)
  task.output("validation", verdict)
  if verdict.passed then
    log.info("validation passed")
  else
    state.set("FAILED", "validation failed: " .. table.concat(problems, "; "))
  end
end

return M
