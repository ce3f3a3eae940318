-- Gamma, the validator: started by the VALIDATION_NEEDED condition; checks
-- Beta's artifacts against the plan and the task's constraints, records the verdict.
-- With an LLM configured (llm.available()) it also records the LLM's second
-- opinion of the verdict; the opinion is advice and never changes the verdict.
local prompt = require("prompt")
local validate = require("validate")

---@type orrery.Role
local M = {}

local REVIEWER = [[You review the work of a multi-agent system. Answer with one JSON object and
nothing else: {"agree": true or false, "concerns": ["..."]}, where agree says whether you
agree with the validator's verdict and concerns lists anything that worries you.]]

-- Asks the LLM whether it agrees with the verdict; returns what it said (or the error).
local function second_opinion(p, problems)
  local lines = {}
  for _, step in ipairs(p and p.steps or {}) do
    local artifact = blackboard.get("artifacts/" .. step.id)
    lines[#lines + 1] = ("- %s (%s): %s"):format(step.id, step.action, artifact and artifact.status or "no artifact")
  end
  local text = ("The task:\n%s\n\nThe steps and their outcome:\n%s\n\nThe validator's verdict: %s"):format(
    prompt.task(task),
    table.concat(lines, "\n"),
    #problems == 0 and "passed" or ("failed: " .. table.concat(problems, "; "))
  )
  local ok, answer = pcall(llm.chat, { system = REVIEWER, prompt = text, json = true, temperature = 0 })
  if not ok then return { error = tostring(answer) } end
  local said = answer.json
  if type(said) ~= "table" or type(said.agree) ~= "boolean" then
    return { error = answer.json_error or "the answer has no boolean 'agree'", source = answer.source }
  end
  return { agree = said.agree, concerns = said.concerns or {}, model = answer.model, source = answer.source }
end

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
  if llm.available() then
    verdict.second_opinion = second_opinion(p, problems)
    if verdict.second_opinion.agree == false then
      log.warn("the LLM disagrees with the verdict: " .. json.encode(verdict.second_opinion.concerns))
    elseif verdict.second_opinion.error then
      log.warn("no second opinion: " .. verdict.second_opinion.error)
    end
  end
  blackboard.set("validation", verdict)
  task.output("validation", verdict)
  if verdict.passed then
    log.info("validation passed")
  else
    state.set("FAILED", "validation failed: " .. table.concat(problems, "; "))
  end
end

return M
