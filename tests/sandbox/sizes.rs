//! Values and messages larger than `max_value_bytes` (4096 in these tests),
//! or nested too deep, are refused at the call, and nothing stored is lost.

use orrery::report::TaskStatus;
use serde_json::json;

use crate::util::{assert_rest_intact, config, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_values_are_refused_at_the_call_and_nothing_is_lost() {
    let script = r#"
local M = {}
function M.start(self)
  blackboard.set("kept", "small")
  task.output("kept", "small")
  local big = ("x"):rep(5000)
  local function try(f) local ok, e = pcall(f) return ok and "accepted" or tostring(e) end
  task.output("errors", {
    set = try(function() blackboard.set("kept", big) end),
    set_table = try(function() blackboard.set("kept", { a = big }) end),
    cas = try(function() blackboard.cas("kept", "small", big) end),
    send = try(function() bus.send("sizer", "big", big) end),
    broadcast = try(function() bus.broadcast("big", { big }) end),
    output = try(function() task.output("kept", big) end),
    encode = try(function() return json.encode({ big }) end),
    decode = try(function() return json.decode('"' .. big .. '"') end),
  })
  task.output("after", blackboard.get("kept"))
end
return M
"#;
    let report = run(&[("sizer.lua", script)], config()).await;
    assert_eq!(report.status, TaskStatus::Complete, "{report:#?}");
    let errors = &report.outputs["errors"];
    for call in [
        "set",
        "set_table",
        "cas",
        "send",
        "broadcast",
        "output",
        "encode",
        "decode",
    ] {
        let e = errors[call].as_str().unwrap();
        assert!(
            e.contains("larger than max_value_bytes (4096 bytes)"),
            "{call}: {e}"
        );
    }
    assert!(
        errors["set"].as_str().unwrap().contains("blackboard"),
        "{errors}"
    );
    assert_eq!(report.outputs["after"], json!("small"));
    assert_eq!(report.outputs["kept"], json!("small"));
    assert_rest_intact(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_cyclic_and_exploding_tables_are_refused_without_stalling() {
    let script = r#"
local M = {}
function M.start(self)
  local function try(f) local ok, e = pcall(f) return ok and "accepted" or tostring(e) end
  local deep = {}
  for i = 1, 10000 do deep = { deep } end
  local cyclic = {}
  cyclic.self = cyclic
  -- 64 levels of a table holding the same table twice: 2^64 entries once expanded.
  local shared = {}
  for i = 1, 64 do shared = { shared, shared } end
  task.output("errors", {
    deep = try(function() blackboard.set("v", deep) end),
    cyclic = try(function() blackboard.set("v", cyclic) end),
    shared = try(function() bus.send("nester", "x", shared) end),
    fn = try(function() blackboard.set("v", print) end),
  })
end
return M
"#;
    let report = run(&[("nester.lua", script)], config()).await;
    assert_eq!(report.status, TaskStatus::Complete, "{report:#?}");
    let errors = &report.outputs["errors"];
    assert!(
        errors["deep"]
            .as_str()
            .unwrap()
            .contains("nested deeper than 100 levels"),
        "{errors}"
    );
    assert!(
        errors["cyclic"]
            .as_str()
            .unwrap()
            .contains("a table that contains itself (a cycle)"),
        "{errors}"
    );
    assert!(
        errors["shared"]
            .as_str()
            .unwrap()
            .contains("larger than max_value_bytes"),
        "{errors}"
    );
    assert!(
        errors["fn"]
            .as_str()
            .unwrap()
            .contains("a function cannot be stored"),
        "{errors}"
    );
    assert_rest_intact(&report);
}
