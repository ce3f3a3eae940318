//! The runner's outputs and the fixtures' promises, on small specs of their own.

use crate::common::{Scratch, orrery, orrery_env, repo, show};

/// A scratch project: the default scripts' directory beside `spec/<name>`.
fn project(specs: &[(&str, &str)]) -> Scratch {
    let scratch = Scratch::new(&[]);
    for name in ["alpha.lua", "beta.lua", "gamma.lua"] {
        let source = std::fs::read_to_string(repo().join("scripts").join(name)).unwrap();
        scratch.write(&format!("scripts/{name}"), &source);
    }
    for (name, source) in specs {
        scratch.write(&format!("spec/{name}"), source);
    }
    scratch
}

const MIXED: &str = r#"
describe("mixed", function()
  it("passes", function() assert.equals(1, 1) end)
  it("fails <here> & there", function() assert.same({ a = { 1, 2 } }, { a = { 1, 3 } }) end)
  pending("is pending")
end)
"#;

#[test]
fn the_summary_lists_each_test_and_the_failures_with_their_place_and_a_diff() {
    let scratch = project(&[("mixed_spec.lua", MIXED)]);
    let out = orrery(scratch.path(), &["test"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(10), "{}", show(&out));
    assert!(
        stdout.contains("  ok      mixed > passes"),
        "{}",
        show(&out)
    );
    assert!(
        stdout.contains("  FAIL    mixed > fails <here> & there (spec/mixed_spec.lua:4)\n          spec/mixed_spec.lua:4: expected the same as"),
        "{}",
        show(&out)
    );
    assert!(
        stdout.contains("a[2]: expected 2, found 3"),
        "{}",
        show(&out)
    );
    assert!(
        stdout.contains("  pending mixed > is pending"),
        "{}",
        show(&out)
    );
    assert!(
        stdout.contains("1 passed, 1 failed, 1 pending (1 file in"),
        "{}",
        show(&out)
    );
}

#[test]
fn tap_and_junit_report_the_same_results_for_ci() {
    let scratch = project(&[("mixed_spec.lua", MIXED)]);
    let out = orrery(scratch.path(), &["test", "--tap", "--junit", "results.xml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(10), "{}", show(&out));
    let tap: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("  ")).collect();
    assert_eq!(
        tap,
        [
            "TAP version 13",
            "1..3",
            "ok 1 - spec/mixed_spec.lua: mixed > passes",
            "not ok 2 - spec/mixed_spec.lua: mixed > fails <here> & there",
            "ok 3 - spec/mixed_spec.lua: mixed > is pending # SKIP pending",
        ],
        "{}",
        show(&out)
    );
    assert!(
        stdout.contains("  at: \"spec/mixed_spec.lua:4\""),
        "{}",
        show(&out)
    );
    let xml = std::fs::read_to_string(scratch.path().join("results.xml")).unwrap();
    assert!(
        xml.contains(
            r#"<testsuites name="orrery test" tests="3" failures="1" errors="0" skipped="1""#
        ),
        "{xml}"
    );
    assert!(xml.contains(r#"<testcase name="mixed &gt; fails &lt;here&gt; &amp; there" classname="spec/mixed_spec.lua" file="spec/mixed_spec.lua:4""#), "{xml}");
    assert!(
        xml.contains("<failure message=\"spec/mixed_spec.lua:4: expected the same as {\">"),
        "{xml}"
    );
    assert!(xml.contains(r#"<skipped message="pending"/>"#), "{xml}");
}

#[test]
fn the_filter_runs_only_the_tests_whose_name_matches() {
    let scratch = project(&[("mixed_spec.lua", MIXED)]);
    let out = orrery(scratch.path(), &["test", "--filter", "> pass"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout.contains("1 passed, 0 failed, 0 pending"),
        "{}",
        show(&out)
    );
    let out = orrery(scratch.path(), &["test", "--filter", "^mixed > f%a+s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("0 passed, 1 failed, 0 pending"),
        "{}",
        show(&out)
    );
}

/// A filter that leaves no test to run is bad input, not a green run of
/// nothing; a malformed pattern matches as plain text only (`(` matched
/// every test) and the error says why.
#[test]
fn a_filter_that_matches_no_test_is_bad_input_naming_the_flag() {
    let scratch = project(&[("mixed_spec.lua", MIXED)]);
    for (filter, says) in [
        ("no such test", "as plain text or as a Lua pattern"),
        ("[", "malformed (malformed pattern (missing ']')"),
        ("(", "malformed (unfinished capture"),
    ] {
        let out = orrery(scratch.path(), &["test", "--filter", filter]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{filter}: {}", show(&out));
        assert!(
            stderr.contains(&format!(
                "flag --filter: '{filter}' matches no test of 1 spec file(s)"
            )) && stderr.contains(says),
            "{filter}: {}",
            show(&out)
        );
    }
}

#[test]
fn hooks_run_around_each_test_outer_first_and_after_each_also_after_a_failure() {
    let spec = r#"
local log = {}
before_each(function() log[#log + 1] = "outer before" end)
after_each(function() log[#log + 1] = "outer after" end)
describe("inner", function()
  before_each(function() log[#log + 1] = "inner before" end)
  after_each(function() log[#log + 1] = "inner after" end)
  it("fails", function() log[#log + 1] = "test"; error("boom") end)
  it("sees the order", function()
    assert.same({ "outer before", "inner before", "test", "inner after", "outer after",
      "outer before", "inner before" }, log)
  end)
end)
"#;
    let scratch = project(&[("hooks_spec.lua", spec)]);
    let out = orrery(scratch.path(), &["test"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("spec/hooks_spec.lua:8: boom"),
        "{}",
        show(&out)
    );
    assert!(stdout.contains("1 passed, 1 failed"), "{}", show(&out));
}

/// A cleanup that fails after a failure is reported too, after the first
/// error: it was dropped, so a broken after_each hid behind any failure.
#[test]
fn an_after_each_that_fails_after_a_failure_is_reported_too() {
    let spec = r#"
before_each(function() error("setup broke") end)
after_each(function() error("cleanup broke") end)
it("runs", function() end)
"#;
    let scratch = project(&[("cleanup_spec.lua", spec)]);
    let out = orrery(scratch.path(), &["test"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(10), "{}", show(&out));
    assert!(
        stdout.contains("in before_each: spec/cleanup_spec.lua:2: setup broke")
            && stdout.contains("also in after_each: spec/cleanup_spec.lua:3: cleanup broke"),
        "{}",
        show(&out)
    );
}

#[test]
fn an_unscripted_llm_call_fails_the_test_quoting_the_prompt_even_when_the_agent_caught_it() {
    // Alpha catches the failed call and falls back to its rules: the run
    // would pass, but the test did not say what the model answers.
    let spec = r#"
it("plans", function()
  test.setup{ task = { type = "deployment" }, llm = { { prompt = "no such prompt", answer = "x" } } }
  spawn.agent("alpha")
  assert.equals("fallback", task.outputs().plan.source)
end)
"#;
    let scratch = project(&[("llm_spec.lua", spec)]);
    let out = orrery(scratch.path(), &["test"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(10), "{}", show(&out));
    assert!(
        stdout.contains("spec/llm_spec.lua:2: unscripted llm.chat call (1 in all), the prompt starts \"Plan this task. id: spec type: deployment"),
        "{}",
        show(&out)
    );
}

#[test]
fn a_test_waiting_for_ever_fails_at_the_task_timeout_of_test_time_in_real_milliseconds() {
    let spec = r#"
it("waits", function()
  test.setup{ task = { timeout = 3600000 } }
  local started = now()
  bus.receive(10000)
  assert.equals(10000, now() - started)
  while true do sleep(1000) end
end)
"#;
    let scratch = project(&[("wait_spec.lua", spec)]);
    let started = std::time::Instant::now();
    let out = orrery(scratch.path(), &["test"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("spec/wait_spec.lua:2: still running after 3600000 ms of test time"),
        "{}",
        show(&out)
    );
    // An hour of test time, a second of real time at most (debug build, loaded machine).
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_test_that_never_yields_fails_by_the_callback_budget() {
    let spec = r#"it("spins", function() while true do end end)"#;
    let scratch = project(&[("spin_spec.lua", spec)]);
    let out = orrery_env(
        scratch.path(),
        &["test"],
        &[("ORRERY_CALLBACK_TIMEOUT", "300")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(10), "{}", show(&out));
    assert!(
        stdout.contains("FAIL    spins (spec/spin_spec.lua:1)"),
        "{}",
        show(&out)
    );
    assert!(stdout.contains("300 ms"), "{}", show(&out));
}

#[test]
fn the_test_api_matches_its_annotations() {
    let meta = std::fs::read_to_string(repo().join("stdlib/meta/test.lua")).unwrap();
    let api = orrery::lua_api::meta::parse("test", &meta);
    let names: Vec<String> = api.functions.keys().cloned().collect();
    let spec = format!(
        r#"
local declared = {{ {} }}
local harness = {{ test = true, spy = true, assert = true }}
it("has what the annotations declare, and nothing else", function()
  local missing, extra = {{}}, {{}}
  local seen = {{}}
  for _, name in ipairs(declared) do
    seen[name] = true
    local t, f = name:match("^(%a+)%.([%w_]+)$")
    local v = t and _G[t][f] or _G[name]
    if type(v) ~= "function" then missing[#missing + 1] = name end
  end
  for t in pairs(harness) do
    for k, v in pairs(_G[t]) do
      if type(v) == "function" and not seen[t .. "." .. k] then extra[#extra + 1] = t .. "." .. k end
    end
  end
  table.sort(extra)
  assert.same({{}}, missing, "declared in stdlib/meta/test.lua, absent")
  assert.same({{}}, extra, "present, not declared in stdlib/meta/test.lua")
end)
"#,
        names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let scratch = project(&[("api_spec.lua", &spec)]);
    let out = orrery(scratch.path(), &["test"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(names.contains(&"describe".to_string()), "{names:?}");
}

#[test]
fn a_test_may_change_settings_of_its_world() {
    let spec = r#"
it("limits agents", function()
  test.setup{ settings = { max_agents = 1 } }
  spawn.agent("beta")
  assert.has_error(function() spawn.agent("beta") end, "max_agents is 1")
end)
it("has the default again", function()
  spawn.agent("beta")
  spawn.agent("beta")
end)
it("refuses an unknown setting", function()
  assert.has_error(function() test.setup{ settings = { max_agent = 1 } } end,
    "test.setup: unknown setting 'max_agent' (known: max_agents,")
  assert.has_error(function() test.setup{ settings = { max_agents = 0 } } end,
    "setting 'max_agents' must be a whole number greater than 0, got 0")
end)
it("refuses a spy on what is not a host function", function()
  assert.has_error(function() test.setup{ spies = { "bus.sendd" } } end,
    "test.setup: spies: 'bus.sendd' is not a host function (as `bus.send`)")
end)
"#;
    let scratch = project(&[("settings_spec.lua", spec)]);
    let out = orrery(scratch.path(), &["test"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

/// An agent that fails where the test did not wait for it fails the test,
/// naming the agent's error; one the test waited for (`spawn.wait` returns
/// FAILED) is a failure the test expected.
#[test]
fn an_agent_failing_unseen_fails_the_test_and_one_waited_for_does_not() {
    let spec = r#"
it("does not look", function()
  spawn.agent("crash")
end)
it("expects it", function()
  local id = spawn.agent("crash")
  assert.equals("FAILED", spawn.wait(id, 1000))
end)
"#;
    let scratch = project(&[("crash_spec.lua", spec)]);
    scratch.write(
        "scripts/crash.lua",
        "local M = {}\nfunction M.start(self)\n  error('crashed on purpose')\nend\nreturn M\n",
    );
    let out = orrery(scratch.path(), &["test"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(10), "{}", show(&out));
    assert!(
        stdout.contains("1 passed, 1 failed")
            && stdout
                .contains("an agent failed while the test ran, and the test did not wait for it")
            && stdout.contains("crash-1: scripts/crash.lua:3: crashed on purpose"),
        "{}",
        show(&out)
    );
}
