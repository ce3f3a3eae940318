-- Beta, the executor: each action's artifact, the task's constraints, steps
-- no action knows (with and without an LLM), and the request for validation.

local DEPLOY = {
  id = "deploy-spec",
  type = "deployment",
  constraints = { "sandbox-only", "no-secrets" },
  inputs = { service = "web", version = "1.4.2", environment = "sandbox", replicas = 2 },
}

-- Sends beta one step and returns its report (step_done or step_failed).
local function run_step(id, action)
  bus.send("beta", "step_ready", { step = { id = id, action = action, description = action }, index = 1, total = 1 })
  local report = bus.receive(1000)
  assert.is_not_nil(report, "beta reported on step " .. id)
  return report
end

describe("beta", function()
  before_each(function()
    test.setup{ task = DEPLOY }
    spawn.agent("beta")
  end)

  it("builds the image of the task's service and version", function()
    assert.equals("step_done", run_step("build", "build").type)
    local artifact = blackboard.get("artifacts/build")
    assert.same({ image = "web:1.4.2", layers = 3 }, artifact.output)
    assert.equals("ok", artifact.status)
    assert.equals("beta-1", artifact.produced_by)
  end)

  it("deploys the image built earlier in the plan to the sandbox", function()
    blackboard.set("plan", { steps = {
      { id = "b", action = "build", description = "build" },
      { id = "d", action = "deploy", description = "deploy" },
    } })
    run_step("b", "build")
    assert.equals("step_done", run_step("d", "deploy").type)
    assert.same({ target = "sandbox", image = "web:1.4.2", replicas = 2, url = "http://web.sandbox.local" },
      task.outputs().deployment)
  end)

  it("refuses to deploy outside the sandbox under sandbox-only", function()
    test.setup{ task = { constraints = { "sandbox-only" }, inputs = { service = "web", environment = "production" } } }
    spawn.agent("beta")
    local report = run_step("d", "deploy")
    assert.equals("step_failed", report.type)
    assert.matches("constraint sandbox%-only forbids deploying to 'production'", report.payload.error)
    assert.equals("failed", blackboard.get("artifacts/d").status)
    assert.is_nil(task.outputs().deployment)
  end)

  it("redacts secret-looking values of the config under no-secrets", function()
    test.setup{ task = { constraints = { "no-secrets" },
      inputs = { config = { port = 8080, api_key = "sk-abcdefghijklmnopqrstuvwxyz" } } } }
    spawn.agent("beta")
    run_step("c", "configure")
    assert.same({ port = 8080, api_key = "***" }, blackboard.get("artifacts/c").output.config)
  end)

  it("verifies only what was deployed", function()
    local report = run_step("v", "verify")
    assert.equals("step_failed", report.type)
    assert.matches("nothing was deployed", report.payload.error)
  end)

  it("fails a step no action knows when no LLM is configured", function()
    local report = run_step("x", "dance")
    assert.equals("step_failed", report.type)
    assert.matches("no action 'dance' in beta.lua", report.payload.error)
  end)

  it("asks the LLM to carry out a step no action knows", function()
    test.setup{ task = DEPLOY, llm = { { prompt = "action 'dance'", answer = "danced twice" } } }
    spawn.agent("beta")
    assert.equals("step_done", run_step("x", "dance").type)
    assert.same({ answer = "danced twice", model = "anthropic/claude-sonnet-4", source = "script" },
      task.outputs()["x.dance"])
  end)

  it("signals VALIDATION_NEEDED once the plan is complete", function()
    test.setup{ task = DEPLOY, spies = { "spawn.signal" } }
    spawn.agent("beta")
    run_step("b", "build")
    run_step("x", "dance")
    bus.send("beta", "plan_complete", { total = 2 })
    assert.equals("COMPLETE", spawn.wait("beta-1", 1000))
    assert.same({ { agent = "beta-1", name = "spawn.signal", args = { "VALIDATION_NEEDED", 0.5 } } },
      test.host_calls())
  end)

  it("asks for validation with the share of steps done as confidence", function()
    local beta = test.role("beta")
    local signal = spy.on(spawn, "signal")
    local self = {}
    beta.start(self)
    -- Counted from the artifacts this agent produced (exact across redeliveries).
    for i, status in ipairs({ "ok", "failed", "ok", "ok" }) do
      blackboard.set("artifacts/s" .. i, { status = status, produced_by = agent.id })
    end
    blackboard.set("artifacts/other", { status = "ok", produced_by = "beta-9" })
    beta.on_message(self, { type = "plan_complete", payload = { total = 4 }, from = "alpha-1" })
    assert.spy(signal).was_called_with("VALIDATION_NEEDED", 0.75)
    assert.same({ steps = 4, done = 3, failed = 1 }, task.outputs().execution)
  end)
end)
