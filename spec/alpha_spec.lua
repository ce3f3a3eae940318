-- Alpha, the planner: the plan's shape, how it follows Beta's reports, and
-- LLM planning with its fallback on an unusable answer.

local DEPLOY = {
  id = "deploy-spec",
  type = "deployment",
  description = "Deploy web service to sandbox",
  constraints = { "sandbox-only", "no-secrets" },
  inputs = { service = "web", version = "1.4.2", environment = "sandbox" },
}

-- Reports every step of alpha's plan as done, except those in `failed`.
local function report_steps(alpha_id, failed)
  for _, step in ipairs(blackboard.get("plan").steps) do
    if failed and failed[step.id] then
      bus.send(alpha_id, "step_failed", { step = step.id, error = failed[step.id] })
    else
      bus.send(alpha_id, "step_done", { step = step.id })
    end
  end
end

describe("alpha", function()
  describe("without an LLM", function()
    before_each(function()
      test.setup{ task = DEPLOY }
    end)

    it("plans a deployment as analyze, build, configure, deploy, verify", function()
      spawn.agent("alpha")
      local plan = blackboard.get("plan")
      local actions = {}
      for i, step in ipairs(plan.steps) do actions[i] = step.action end
      assert.same({ "analyze", "build", "configure", "deploy", "verify" }, actions)
      assert.equals("deploy-spec", plan.task_id)
      assert.same({ source = "rules", steps = 5 }, task.outputs().plan)
    end)

    it("plans other task types as analyze, execute, report", function()
      test.setup{ task = { type = "research" } }
      spawn.agent("alpha")
      assert.equals(3, #blackboard.get("plan").steps)
      assert.equals("execute", blackboard.get("plan").steps[2].action)
    end)

    it("hands Beta each step in order, then plan_complete", function()
      local alpha = test.role("alpha")
      local send = spy.on(bus, "send")
      alpha.start({})
      assert.equals(6, #send.calls)
      assert.spy(send).was_called_with("beta", "step_ready", { index = 1, total = 5, step = blackboard.get("plan").steps[1] })
      assert.same({ "beta", "plan_complete", { total = 5 } }, send:args(6))
    end)

    it("completes once Beta reported every step done", function()
      local id = spawn.agent("alpha")
      report_steps(id)
      assert.equals("COMPLETE", spawn.wait(id, 1000))
      assert.equals(5, metrics.get("steps_reported"))
    end)

    it("counts a report delivered twice once", function()
      local id = spawn.agent("alpha")
      local steps = blackboard.get("plan").steps
      for i = 1, 4 do
        bus.send(id, "step_done", { step = steps[i].id })
        bus.send(id, "step_done", { step = steps[i].id })
      end
      test.advance(100)
      assert.equals("EXECUTING", state.get(id))
      bus.send(id, "step_done", { step = steps[5].id })
      assert.equals("COMPLETE", spawn.wait(id, 1000))
      assert.equals(5, metrics.get("steps_reported"))
    end)

    it("resumed with its plan out, goes on from its checkpoint without planning again", function()
      local alpha = test.role("alpha")
      alpha.start({})
      local send = spy.on(bus, "send")
      local self = {}
      alpha.on_resume(self, { reported = { ["step-1"] = true, ["step-2"] = "broke" } })
      assert.equals(0, #send.calls)
      assert.same({ ["step-1"] = true, ["step-2"] = "broke" }, self.reported)
    end)

    it("resumed before its plan was out, plans and hands it over again", function()
      local alpha = test.role("alpha")
      local send = spy.on(bus, "send")
      alpha.on_resume({}, nil)
      assert.equals(6, #send.calls)
    end)

    it("fails naming the steps Beta could not carry out", function()
      local id = spawn.agent("alpha")
      report_steps(id, { ["step-4"] = "constraint sandbox-only forbids deploying to 'prod'" })
      assert.equals("FAILED", spawn.wait(id, 1000))
      local agents = state.agents("alpha")
      assert.matches("steps failed: step%-4: constraint sandbox%-only", agents[1].error)
    end)
  end)

  describe("with an LLM", function()
    it("follows the LLM's plan when it is valid", function()
      test.setup{ task = DEPLOY, llm = {
        { prompt = "Plan this task", answer = { steps = {
          { id = "look", action = "analyze", description = "Look around" },
          { id = "ship", action = "deploy", description = "Ship it" },
        } } },
      } }
      spawn.agent("alpha")
      assert.equals(2, #blackboard.get("plan").steps)
      assert.equals("llm", task.outputs().plan.source)
      local calls = test.llm_calls()
      assert.equals(1, #calls)
      assert.is_true(calls[1].json)
      assert.matches("description: Deploy web service to sandbox", calls[1].prompt)
    end)

    it("falls back to the rules when the answer is not JSON", function()
      test.setup{ task = DEPLOY, llm = { "Sure! Here is a plan: first, analyze..." } }
      spawn.agent("alpha")
      local origin = task.outputs().plan
      assert.equals("fallback", origin.source)
      assert.equals(5, origin.steps)
    end)

    it("falls back to the rules when the plan is invalid", function()
      test.setup{ task = DEPLOY, llm = { { prompt = "Plan", answer = { steps = {} } } } }
      spawn.agent("alpha")
      assert.matches("the LLM's plan is invalid: plan has no steps list", task.outputs().plan.reason)
    end)

    it("falls back to the rules when the call fails", function()
      test.setup{ task = DEPLOY, llm = { { prompt = "Plan", error = "timeout" } } }
      spawn.agent("alpha")
      assert.matches("the LLM call failed %(timeout%)", task.outputs().plan.reason)
    end)
  end)
end)
