-- The stdlib modules: plan, validate, retry, pretty, prompt, check, testing.
local plan = require("plan")
local validate = require("validate")
local retry = require("retry")
local pretty = require("pretty")
local prompt = require("prompt")
local check = require("check")
local testing = require("testing")

describe("plan", function()
  it("builds the rule-based plan of a task type", function()
    local p = plan.for_task({ id = "t", type = "deployment" })
    assert.equals(5, #p.steps)
    assert.same({ id = "step-1", action = "analyze", description = "Analyse the service and its constraints" }, p.steps[1])
    assert.equals("t", p.task_id)
  end)

  it("validates plans, saying what is wrong", function()
    assert.is_true(plan.validate(plan.for_task({ type = "x" })))
    assert.same({ false, "plan has no steps list" }, { plan.validate({}) })
    assert.same({ false, "step 1 has no string 'description'" }, { plan.validate({ steps = { { id = "a", action = "b" } } }) })
    local twice = { steps = { plan.step("a", "x"), plan.step("a", "y") } }
    assert.same({ false, "step id 'a' appears twice" }, { plan.validate(twice) })
  end)

  it("finds a step by id", function()
    local p = { steps = { plan.step("a", "x"), plan.step("b", "y") } }
    assert.equals("y", plan.find(p, "b").action)
    assert.is_nil(plan.find(p, "c"))
  end)

  it("checks its arguments", function()
    assert.has_error(function() plan.step(1, "x") end, "plan.step: expected string 'id', got number")
  end)
end)

describe("validate", function()
  it("finds secret-looking strings with their path", function()
    local found = validate.find_secrets({ a = { b = "AKIAABCDEFGHIJKLMNOP" }, ok = "fine" }, "cfg")
    assert.same({ { path = "cfg.a.b", kind = "aws access key" } }, found)
  end)

  it("redacts them", function()
    assert.equals("token *** here", validate.redact("token sk-abcdefghijklmnop here"))
    assert.equals("***", validate.redact("password = hunter2"))
    -- A long token goes whole, not its first 16 characters.
    assert.equals("key *** end", validate.redact("key sk-proj-abcdefghijklmnopqrstuvwxyz0123 end"))
    assert.equals("id *** end", validate.redact("id AKIA2E0A8F3B244C9986 end"))
  end)

  it("reads the task's constraints", function()
    assert.is_true(validate.has_constraint({ constraints = { "no-secrets" } }, "no-secrets"))
    assert.is_false(validate.has_constraint({ constraints = {} }, "no-secrets"))
  end)
end)

describe("retry", function()
  it("retries with a doubling delay on the test clock", function()
    local started, attempts = now(), 0
    local result = retry.call(function(n)
      attempts = n
      if n < 3 then error("not yet") end
      return "done"
    end, { attempts = 5, delay = 100 })
    assert.equals("done", result)
    assert.equals(3, attempts)
    assert.equals(300, now() - started)
  end)

  it("re-raises the last error", function()
    assert.has_error(function()
      retry.call(function(n) error("attempt " .. n, 0) end, { attempts = 2, delay = 1 })
    end, "attempt 2")
  end)
end)

describe("pretty", function()
  it("formats tables sorted by key", function()
    assert.equals('{\n  a = 1,\n  b = "x"\n}', pretty.format({ b = "x", a = 1 }))
    assert.equals("{}", pretty.format({}))
  end)
end)

describe("prompt", function()
  it("writes the task as lines", function()
    local text = prompt.task({ id = "t1", type = "x", description = "d", constraints = { "c" }, inputs = { k = 1 } })
    assert.equals('id: t1\ntype: x\ndescription: d\nconstraints: ["c"]\ninputs: {"k":1}', text)
  end)
end)

describe("check", function()
  it("names the function, the argument and what it got", function()
    local function f(x) check.arg("mod.f", "x", x, { "string", "table" }) end
    assert.has_error(function() f(1) end, "mod.f: expected string or table 'x', got number")
    assert.has_no_error(function() f("ok") end)
  end)
end)

describe("testing", function()
  it("compares deeply and raises with both values", function()
    assert.is_true(testing.deep_equal({ 1, { 2 } }, { 1, { 2 } }))
    assert.has_error(function() testing.eq(1, 2, "sum") end, "sum: expected 2, got 1")
  end)
end)
