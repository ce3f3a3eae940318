//! The time budgets: `callback_timeout` (Lua running time per callback) and
//! `agent_timeout` (an agent's whole life, awaiting included).

use orrery::config::Config;
use orrery::report::TaskStatus;
use serde_json::json;

use crate::util::{assert_rest_intact, config, fatal, run, start};

/// Runs `body` as the `start` of role `spin` and returns the report, asserting
/// that spin-1 failed with a timeout naming the callback while the rest went on.
async fn assert_start_times_out(body: &str) -> orrery::report::RunReport {
    let script = start(body);
    let report = run(&[("spin.lua", &script)], config()).await;
    let e = fatal(&report, "spin-1");
    assert_eq!(e.kind, "timeout", "{report:#?}");
    assert_eq!(e.exit_code, 4);
    assert!(
        e.message.contains("callback 'start' of agent spin-1"),
        "{}",
        e.message
    );
    assert!(e.message.contains("callback_timeout"), "{}", e.message);
    assert!(e.message.contains("exceeded 200 ms"), "{}", e.message);
    assert_eq!(report.status, TaskStatus::Failed);
    assert_eq!(report.exit_code(), 4);
    assert_rest_intact(&report);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_fails_its_agent_and_names_the_line() {
    let report = assert_start_times_out("  local n = 0\n  while true do n = n + 1 end").await;
    let e = fatal(&report, "spin-1");
    assert!(
        e.message.contains("scripts/spin.lua:4) exceeded"),
        "{}",
        e.message
    );
}

/// The patched Lua charges the budget at loop back-edges and function
/// entries only: every way to run for ever goes through one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shape_of_endless_loop_is_interrupted() {
    let shapes = [
        // A tail call jumps back without a loop instruction.
        "  local function f(n) return f(n + 1) end\n  f(0)",
        "  local function f(...) return f(...) end\n  f(1, 2, 3)",
        "  local b\n  local function a(n) return b(n) end\n  b = function(n) return a(n + 1) end\n  a(0)",
        // goto, a numeric for loop over floats, a generic for, repeat.
        "  ::again:: do local x = 1 end\n  goto again",
        "  for i = 1.0, math.huge, 0.5 do end",
        "  for _ in function() return 1 end do end",
        "  repeat local x = 1 until false",
        // Recursion that never gets deep: each call returns before the next.
        "  local function f() end\n  local t = setmetatable({}, {__index = function() f() return 1 end})\n  while t.x do end",
    ];
    for body in shapes {
        eprintln!("shape: {body}");
        assert_start_times_out(body).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcall_cannot_swallow_the_interruption() {
    assert_start_times_out("  while true do pcall(function() while true do end end) end").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_pcall_and_xpcall_handlers_cannot_swallow_it() {
    assert_start_times_out(
        r#"
  local function spin() while true do end end
  while true do
    pcall(function()
      while true do
        xpcall(spin, function(e) while true do end end)
        pcall(pcall, spin)
      end
    end)
  end"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_inside_a_coroutine_is_interrupted() {
    assert_start_times_out(
        r#"
  while true do
    local co = coroutine.wrap(function() while true do pcall(function() while true do end end) end end)
    pcall(co)
  end"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_that_returns_after_the_interruption_still_fails() {
    // The coroutine is interrupted and dies; its parent could return normally.
    assert_start_times_out(
        r#"
  local ok = coroutine.resume(coroutine.create(function() while true do end end))
  blackboard.set("after", ok)"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_level_loop_fails_at_load() {
    let report = run(&[("spin.lua", "while true do end\nreturn {}")], config()).await;
    let e = fatal(&report, "spin-1");
    assert_eq!(e.kind, "timeout");
    assert!(
        e.message.contains("callback 'load' of agent spin-1"),
        "{}",
        e.message
    );
    assert_rest_intact(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_message_handler_fails_its_agent_and_keeps_the_message() {
    let spin = r#"
local M = {}
function M.start(self) bus.send("spin", "go", {}) end
function M.on_message(self, msg) while true do end end
return M
"#;
    let report = run(&[("spin.lua", spin)], config()).await;
    let e = fatal(&report, "spin-1");
    assert_eq!(e.kind, "timeout");
    assert!(
        e.message.contains("callback 'message 'go' from spin-1'"),
        "{}",
        e.message
    );
    assert_rest_intact(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_spent_awaiting_the_host_does_not_count() {
    // Three times the callback budget asleep, then a short computation.
    let patient = r#"
local M = {}
function M.start(self)
  for i = 1, 3 do sleep(200) end
  bus.receive(200)
  task.output("patient", "done")
end
return M
"#;
    let report = run(&[("patient.lua", patient)], config()).await;
    assert_eq!(report.status, TaskStatus::Complete, "{report:#?}");
    assert_eq!(report.outputs.get("patient"), Some(&json!("done")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_timeout_bounds_an_agent_that_awaits_forever() {
    let stuck = r#"
local M = {}
function M.start(self) blackboard.set("before", true); sleep(1e9) end
return M
"#;
    let cfg = Config {
        agent_timeout: 300,
        ..config()
    };
    let report = run(&[("stuck.lua", stuck)], cfg).await;
    let e = fatal(&report, "stuck-1");
    assert_eq!(e.kind, "timeout");
    assert!(
        e.message
            .contains("agent stuck-1 (setting agent_timeout) exceeded 300 ms"),
        "{}",
        e.message
    );
    assert_eq!(report.exit_code(), 4);
    assert_rest_intact(&report);
    let phases = &report.metrics.agent_metrics["stuck-1"].phases;
    assert_eq!(
        phases.last().map(String::as_str),
        Some("FAILED"),
        "{phases:?}"
    );
}
