//! `require("check")`, the stdlib's one argument check (as Neovim's
//! `vim.validate`), and its use by every public function of the stdlib
//! modules: a bad argument is an error naming the function, the argument,
//! what it wants and what it got, at the script line that made the call.

use crate::common::Backend;
use crate::util::{assert_clean, line_of, output, run, task};

const CHECKER: &str = r#"local check = require("check")
local plan = require("plan")
local prompt = require("prompt")
local retry = require("retry")
local validate = require("validate")
local pretty = require("pretty")
local testing = require("testing")

local M = {}

local function try(f)
  local ok, err = pcall(f)
  return ok and "ok" or tostring(err)
end

-- A public function of the script's own, checked by the helper.
local function f(x, expected, optional)
  check.arg("f", "x", x, expected, optional)
end

function M.start(self)
  local out = {}
  out.plan_step = try(function() plan.step(1, "build") end)
  out.plan_description = try(function() plan.step("s1", "build", false) end)
  out.plan_find = try(function() plan.find({ steps = {} }, 7) end)
  out.plan_for_task = try(function() plan.for_task("deployment") end)
  out.prompt_task = try(function() prompt.task(nil) end)
  out.retry_fn = try(function() retry.call("f") end)
  out.retry_opts = try(function() retry.call(function() end, { attempts = "3" }) end)
  out.redact = try(function() validate.redact(42) end)
  out.has_constraint = try(function() validate.has_constraint(task, 1) end)
  out.find_secrets = try(function() validate.find_secrets({}, 5) end)
  out.pretty = try(function() pretty.format({}, 2) end)
  out.raises = try(function() testing.raises(nil) end)
  out.eq = try(function() testing.eq(1, 1, {}) end)
  out.good_calls = try(function()
    plan.find(plan.for_task(task), "step-1")
    retry.call(function() end, { attempts = 1 })
    testing.raises(function() error("boom") end, "boom")
    assert(validate.has_constraint(task, "no-secrets") == false)
  end)
  out.type = try(function() f("x", "string") end)
  out.optional = try(function() f(nil, "string", true) end)
  out.required = try(function() f(nil, "string") end)
  out.list = try(function() f(true, { "string", "table" }) end)
  out.callable = try(function() f(setmetatable({}, { __call = function() end }), "callable") end)
  out.not_callable = try(function() f({}, "callable") end)
  out.integer = try(function() f(1.5, "integer") end)
  out.whole_float = try(function() f(2.0, "integer") end)
  out.predicate = try(function() f(-1, function(v) return v > 0, "positive number" end) end)
  out.bad_expected = try(function() f(1, 5) end)
  task.output("out", out)
end

return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_name_the_function_argument_and_the_calling_line() {
    let report = run(
        Backend::Memory,
        &[("checker.lua", CHECKER)],
        task("checker", ""),
        Default::default(),
    )
    .await;
    assert_clean(Backend::Memory, &report);
    let out = output(&report, "out");
    let at = |key: &str| {
        let line = line_of(CHECKER, &format!("out.{key} = "));
        format!("scripts/checker.lua:{line}: ")
    };
    let cases = [
        ("plan_step", "plan.step: expected string 'id', got number"),
        (
            "plan_description",
            "plan.step: expected string 'description', got boolean",
        ),
        ("plan_find", "plan.find: expected string 'id', got number"),
        (
            "plan_for_task",
            "plan.for_task: expected table 'task', got string",
        ),
        ("prompt_task", "prompt.task: expected table 'task', got nil"),
        ("retry_fn", "retry.call: expected function 'fn', got string"),
        (
            "retry_opts",
            "retry.call: expected number 'opts.attempts', got string",
        ),
        ("redact", "validate.redact: expected string 's', got number"),
        (
            "has_constraint",
            "validate.has_constraint: expected string 'name', got number",
        ),
        (
            "find_secrets",
            "validate.find_secrets: expected string 'root', got number",
        ),
        (
            "pretty",
            "pretty.format: expected string 'indent', got number",
        ),
        ("raises", "testing.raises: expected callable 'fn', got nil"),
        ("eq", "testing.eq: expected string 'message', got table"),
        ("required", "f: expected string 'x', got nil"),
        ("list", "f: expected string or table 'x', got boolean"),
        ("not_callable", "f: expected callable 'x', got table"),
        ("integer", "f: expected integer 'x', got number"),
        ("predicate", "f: expected positive number 'x', got number"),
    ];
    for (key, message) in cases {
        let got = out[key].as_str().unwrap_or_default();
        // The chunk name is the script's path, absolute in-process.
        assert!(
            got.ends_with(&format!("/{}{message}", at(key))),
            "{key}: {out:#}"
        );
    }
    for key in ["good_calls", "type", "optional", "callable", "whole_float"] {
        assert_eq!(out[key], "ok", "{key}: {out:#}");
    }
    let bad = out["bad_expected"].as_str().unwrap();
    assert!(
        bad.contains("check.arg: expected a type name, a list of them or a function as 'expected', got number"),
        "{bad}"
    );
}
