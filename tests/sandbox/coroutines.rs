//! Waiting host calls inside a script's own coroutines: each shape (create
//! and resume, wrap, nested, inside `pcall` inside a coroutine) waits for
//! the call and gets its real result, and the script never sees mlua's
//! "pending" marker (a light userdata holding a host address). On the
//! embedded store for `sleep` and the bus, on Redis for a store call.

use orrery::report::RunReport;
use serde_json::{Value, json};

use crate::common::Backend;
use crate::util::{assert_rest_intact, config, run_on, start};

/// Runs `role` (`a.lua`) beside `others` on `backend` with a roomy budget
/// (the calls wait; waiting does not count, but a slow machine should not
/// fail the test).
async fn run_role(backend: Backend, role: &str, others: &[(&str, &str)]) -> RunReport {
    let mut scripts = vec![("a.lua", role)];
    scripts.extend_from_slice(others);
    let report = run_on(
        backend,
        &scripts,
        orrery::config::Config {
            callback_timeout: 10_000,
            ..config()
        },
    )
    .await;
    assert!(report.errors.is_empty(), "{report:#?}");
    assert_rest_intact(&report);
    report
}

/// The output `name` of the run.
fn output<'a>(report: &'a RunReport, name: &str) -> &'a Value {
    report
        .outputs
        .get(name)
        .unwrap_or_else(|| panic!("no output '{name}': {report:#?}"))
}

/// Describes what the script got as text (`type:value`), so a leaked
/// marker (a light userdata) reads as `userdata:...` in the assertion.
const SHOW: &str = r##"
local function show(...)
  local out = {}
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    out[i] = type(v) .. ":" .. (type(v) == "table" and tostring(v.payload and v.payload.n or v.type) or tostring(v))
  end
  return table.concat(out, " ")
end
"##;

#[tokio::test]
async fn sleep_inside_a_resumed_coroutine_waits_and_returns() {
    let body = format!(
        r#"{SHOW}
  local co = coroutine.create(function()
    local t0 = now()
    sleep(100)
    return "slept", now() - t0 >= 100
  end)
  task.output("first", show(coroutine.resume(co)))
  task.output("status", coroutine.status(co))
  task.output("second", show(coroutine.resume(co)))"#
    );
    let report = run_role(Backend::Memory, &start(&body), &[]).await;
    assert_eq!(
        output(&report, "first"),
        &json!("boolean:true string:slept boolean:true")
    );
    assert_eq!(output(&report, "status"), &json!("dead"));
    assert_eq!(
        output(&report, "second"),
        &json!("boolean:false string:cannot resume dead coroutine")
    );
}

#[tokio::test]
async fn a_coroutine_that_yields_and_waits_keeps_its_own_yields() {
    let body = format!(
        r#"{SHOW}
  local co = coroutine.create(function(x)
    local y = coroutine.yield("mine", x)
    sleep(30)
    return "done", y
  end)
  task.output("steps", show(coroutine.resume(co, 1)) .. " | " .. show(coroutine.resume(co, 2))
    .. " | " .. show(coroutine.resume(co)))"#
    );
    let report = run_role(Backend::Memory, &start(&body), &[]).await;
    assert_eq!(
        output(&report, "steps"),
        &json!(
            "boolean:true string:mine number:1 | boolean:true string:done number:2 \
             | boolean:false string:cannot resume dead coroutine"
        )
    );
}

/// A role `s` that sends `a-1` a message `ping {n = 7}` once `a` waits.
const SENDER: (&str, &str) = (
    "s.lua",
    r#"
local M = {}
function M.start(self)
  sleep(50)
  bus.send("a-1", "ping", { n = 7 })
end
return M
"#,
);

#[tokio::test]
async fn bus_receive_inside_a_wrapped_coroutine_waits_for_the_message() {
    let body = format!(
        r#"{SHOW}
  local co = coroutine.wrap(function() return bus.receive(5000) end)
  task.output("got", show(co()))"#
    );
    let report = run_role(Backend::Memory, &start(&body), &[SENDER]).await;
    assert_eq!(output(&report, "got"), &json!("table:7"));
}

#[tokio::test]
async fn nested_coroutines_and_pcall_inside_a_coroutine_wait() {
    let body = format!(
        r#"{SHOW}
  local outer = coroutine.wrap(function()
    local inner = coroutine.create(function()
      local ok, msg = pcall(bus.receive, 5000)
      sleep(10)
      return ok, msg
    end)
    return coroutine.resume(inner)
  end)
  task.output("got", show(outer()))"#
    );
    let report = run_role(Backend::Memory, &start(&body), &[SENDER]).await;
    assert_eq!(
        output(&report, "got"),
        &json!("boolean:true boolean:true table:7")
    );
}

#[tokio::test]
async fn bus_request_inside_a_wrapped_coroutine_gets_its_reply() {
    let answerer = (
        "b.lua",
        r#"
local M = {}
function M.on_message(self, msg)
  sleep(20)
  bus.reply(msg, { n = msg.payload.n * 2 })
  agent.finish()
end
return M
"#,
    );
    let body = format!(
        r#"{SHOW}
  local co = coroutine.wrap(function() return bus.request("b", "double", {{ n = 21 }}, 5000) end)
  task.output("reply", show(co()))"#
    );
    let report = run_role(Backend::Memory, &start(&body), &[answerer]).await;
    assert_eq!(output(&report, "reply"), &json!("table:42"));
}

#[tokio::test]
async fn store_calls_inside_coroutines_wait_on_redis() {
    // `sleep` observes the store, so `get` asks Redis instead of reading
    // back the agent's own write.
    let body = format!(
        r#"{SHOW}
  blackboard.set("k", "value")
  sleep(10)
  local co = coroutine.wrap(function() return blackboard.get("k") end)
  task.output("get", show(co()))
  local co2 = coroutine.create(function()
    return pcall(function() return blackboard.keys("k"), state.get() end)
  end)
  local ok, inner_ok, keys, phase = coroutine.resume(co2)
  task.output("keys", show(ok, inner_ok, keys[1], phase))"#
    );
    let report = run_role(Backend::Redis, &start(&body), &[]).await;
    assert_eq!(output(&report, "get"), &json!("string:value"));
    assert_eq!(
        output(&report, "keys"),
        &json!("boolean:true boolean:true string:k string:READY")
    );
}

#[tokio::test]
async fn xpcall_returns_its_status_first_as_the_stock_one_does() {
    let body = format!(
        r#"{SHOW}
  task.output("ok", show(xpcall(function(a) return a, 2 end, tostring, 1)))
  task.output("err", show(xpcall(function() error("boom", 0) end, function(e) return "handled " .. e end)))"#
    );
    let report = run_role(Backend::Memory, &start(&body), &[]).await;
    assert_eq!(
        output(&report, "ok"),
        &json!("boolean:true number:1 number:2")
    );
    assert_eq!(
        output(&report, "err"),
        &json!("boolean:false string:handled boom")
    );
}
