-- The default agents together: the example task run from start to end.

describe("the deploy example", function()
  it("completes: planned, executed, validated", function()
    local report = test.run{ task = "examples/deploy.toml" }
    assert.equals("complete", report.status)
    assert.same({}, report.errors)
    assert.same({ "alpha-1", "beta-1", "gamma-1" }, report.agents_used)
    assert.is_true(report.outputs.validation.passed)
    assert.same({ steps = 5, done = 5, failed = 0 }, report.outputs.execution)
    assert.equals("ok", report.blackboard["artifacts/step-5"].status)
  end)

  it("fails when the environment is not the sandbox", function()
    local report = test.run{ task = {
      id = "deploy-prod", type = "deployment", agents = { "alpha", "beta" },
      constraints = { "sandbox-only" }, inputs = { service = "web", environment = "production" },
      spawn = { { trigger = "VALIDATION_NEEDED", threshold = 0.5, agent = "gamma" } },
    } }
    assert.equals("failed", report.status)
    assert.matches("step%-4: scripts/beta.lua:%d+: constraint sandbox%-only forbids deploying", report.errors[1].message)
  end)

  it("can be driven from inside: started as run starts it, watched as it goes", function()
    test.setup{ task = "examples/deploy.toml" }
    assert.same({ "alpha-1", "beta-1" }, test.start())
    assert.equals("COMPLETE", spawn.wait("alpha-1", 5000))
    -- Beta's VALIDATION_NEEDED signal started gamma, as the task's [[spawn]] says.
    assert.equals("COMPLETE", spawn.wait("gamma-1", 5000))
    assert.is_true(task.outputs().validation.passed)
    assert.equals(5, #blackboard.keys("artifacts/"))
  end)

  it("plans with the LLM from a replay file", function()
    local report = test.run{ task = "examples/release-notes.toml", llm = "examples/release-notes.jsonl" }
    assert.equals("complete", report.status)
    assert.equals("llm", report.outputs.plan.source)
  end)
end)
