-- Gamma, the validator: its verdict on Beta's artifacts and the task's
-- constraints, and the LLM's second opinion that never changes it.

local STEPS = {
  { id = "s1", action = "build", description = "build" },
  { id = "s2", action = "deploy", description = "deploy" },
}

local function artifact(id, status, err)
  blackboard.set("artifacts/" .. id, { step = id, status = status, error = err })
end

-- Starts gamma, waits for its end; returns its final phase and verdict.
local function validate()
  local id = spawn.agent("gamma")
  local phase = spawn.wait(id, 1000)
  return phase, task.outputs().validation
end

describe("gamma", function()
  before_each(function()
    test.setup{ task = { constraints = { "sandbox-only", "no-secrets" } } }
    blackboard.set("plan", { steps = STEPS })
  end)

  it("passes a run whose every step has an ok artifact", function()
    artifact("s1", "ok")
    artifact("s2", "ok")
    local phase, verdict = validate()
    assert.equals("COMPLETE", phase)
    assert.same({ passed = true, problems = {}, validated_by = "gamma-1" }, verdict)
  end)

  it("fails a run with a failed or missing artifact, naming the steps", function()
    artifact("s1", "failed", "boom")
    local phase, verdict = validate()
    assert.equals("FAILED", phase)
    assert.same({ "s1: boom", "s2: no artifact" }, verdict.problems)
  end)

  it("fails a run without a plan", function()
    blackboard.delete("plan")
    local _, verdict = validate()
    assert.same({ "no plan on the blackboard" }, verdict.problems)
  end)

  it("finds secret-looking values anywhere on the blackboard under no-secrets", function()
    artifact("s1", "ok")
    artifact("s2", "ok")
    blackboard.set("notes", { token = "ghp_abcdefghijklmnopqrstuvwxyz" })
    local _, verdict = validate()
    assert.same({ "secret-looking github token at notes.token" }, verdict.problems)
  end)

  it("fails a deployment outside the sandbox under sandbox-only", function()
    artifact("s1", "ok")
    artifact("s2", "ok")
    task.output("deployment", { target = "production" })
    local _, verdict = validate()
    assert.same({ "deployed outside the sandbox: production" }, verdict.problems)
  end)

  it("records the LLM's second opinion without changing the verdict", function()
    test.setup{ task = {}, llm = { { prompt = "validator's verdict: passed",
      answer = { agree = false, concerns = { "no load test" } } } } }
    blackboard.set("plan", { steps = STEPS })
    artifact("s1", "ok")
    artifact("s2", "ok")
    local phase, verdict = validate()
    assert.equals("COMPLETE", phase)
    assert.is_true(verdict.passed)
    assert.same({ agree = false, concerns = { "no load test" }, model = "anthropic/claude-sonnet-4", source = "script" },
      verdict.second_opinion)
  end)
end)
