//! Escape attempts: every way out of the VM a script might try is refused
//! with a clear error (or simply absent), and what a script changes stays in
//! its own VM.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::util::{assert_rest_intact, config, fatal, run};

/// Runs each `(name, lua expression)` in a pcall inside one agent and returns
/// name -> `{ok, value, err}`.
async fn probe(probes: &[(&str, &str)]) -> BTreeMap<String, Value> {
    let mut body = String::from("local M = {}\nfunction M.start(self)\n");
    for (name, expr) in probes {
        body.push_str(&format!(
            "  do\n    local ok, v = pcall(function() return {expr} end)\n    \
             task.output({name:?}, {{ ok = ok, value = ok and tostring(v) or nil, err = (not ok) and tostring(v) or nil }})\n  end\n"
        ));
    }
    body.push_str("end\nreturn M\n");
    let report = run(&[("probe.lua", &body)], config()).await;
    assert_rest_intact(&report);
    assert!(report.errors.is_empty(), "{report:#?}");
    report.outputs.into_iter().collect()
}

fn value<'a>(results: &'a BTreeMap<String, Value>, name: &str) -> &'a Value {
    &results[name]["value"]
}

fn err<'a>(results: &'a BTreeMap<String, Value>, name: &str) -> &'a str {
    results[name]["err"]
        .as_str()
        .unwrap_or_else(|| panic!("probe {name} did not fail: {:?}", results[name]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_libraries_and_functions_are_absent() {
    let absent = [
        ("io", "io"),
        ("debug", "debug"),
        ("os.execute", "os.execute"),
        ("os.exit", "os.exit"),
        ("os.remove", "os.remove"),
        ("os.rename", "os.rename"),
        ("os.getenv", "os.getenv"),
        ("os.tmpname", "os.tmpname"),
        ("package.loadlib", "package.loadlib"),
        ("package.cpath", "package.cpath"),
        ("package.searchers", "package.searchers"),
        ("string.dump", "string.dump"),
        ("dofile", "dofile"),
        ("loadfile", "loadfile"),
        ("via load", "load('return io or os.execute or debug')()"),
    ];
    let results = probe(&absent).await;
    for (name, _) in absent {
        assert_eq!(
            value(&results, name),
            &json!("nil"),
            "{name}: {:?}",
            results[name]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_reaches_only_the_scripts_directory_and_the_stdlib() {
    let results = probe(&[
        ("stdlib", "type(require('plan'))"),
        ("io", "require('io')"),
        ("debug", "require('debug')"),
        ("traversal", "require('../../../etc/passwd')"),
        ("absolute", "require('/etc/passwd')"),
        ("c module", "require('socket.core')"),
        ("a role", "require('probe')"),
    ])
    .await;
    assert_eq!(value(&results, "stdlib"), &json!("table"));
    // A role's file is there: the error says why it is not a module.
    assert!(
        err(&results, "a role").contains("probe.lua is a role script"),
        "{:?}",
        results["a role"]
    );
    for name in ["io", "debug", "traversal", "absolute", "c module"] {
        assert!(
            err(&results, name).contains("not found"),
            "{name}: {:?}",
            results[name]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_compiles_text_only_in_the_sandbox() {
    let results = probe(&[
        ("binary", r#"select(2, load("\27Lua\84\0"))"#),
        ("binary mode", r#"select(2, load("\27Lua\84\0", "x", "b"))"#),
        (
            "own env",
            "(function() local env = {} load('x = 42', 'c', 't', env)() return env.x end)()",
        ),
        (
            "globals untouched",
            "(function() load('y = 1', 'c', 't', {})() return y end)()",
        ),
    ])
    .await;
    for name in ["binary", "binary mode"] {
        assert!(
            value(&results, name)
                .as_str()
                .unwrap()
                .contains("binary chunk"),
            "{name}: {:?}",
            results[name]
        );
    }
    assert_eq!(value(&results, "own env"), &json!("42"));
    assert_eq!(value(&results, "globals untouched"), &json!("nil"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_and_gc_control_are_refused() {
    let results = probe(&[
        (
            "__gc",
            "setmetatable({}, { __gc = function() while true do end end })",
        ),
        (
            "plain metatable",
            "getmetatable(setmetatable({}, { __index = {} })) ~= nil",
        ),
        ("gc stop", "collectgarbage('stop')"),
        ("gc generational", "collectgarbage('generational')"),
        ("gc count", "type(collectgarbage('count'))"),
    ])
    .await;
    assert!(err(&results, "__gc").contains("__gc metamethods are not available"));
    assert_eq!(value(&results, "plain metatable"), &json!("true"));
    assert!(err(&results, "gc stop").contains("option 'stop' is not available"));
    assert!(err(&results, "gc generational").contains("not available"));
    assert_eq!(value(&results, "gc count"), &json!("number"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_handlers_run_and_a_looping_one_is_interrupted() {
    // `<close>` works as in Lua; a handler that loops (here reached as the
    // fourth value of a generic `for`, closed while the budget unwinds the
    // callback) is interrupted like any other code.
    let closer = r#"
local M = {}
function M.start(self)
  local closed = false
  do local x <close> = setmetatable({}, { __close = function() closed = true end }) end
  task.output("closed", closed)
  local spin = setmetatable({}, { __close = function() while true do end end })
  for _ in function() return 1 end, nil, nil, spin do
    while true do end
  end
end
return M
"#;
    let report = run(&[("closer.lua", closer)], config()).await;
    assert_eq!(report.outputs["closed"], json!(true), "{report:#?}");
    let e = fatal(&report, "closer-1");
    assert_eq!(e.kind, "timeout", "{e:?}");
    assert_rest_intact(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_to_shared_looking_tables_stay_in_the_agents_vm() {
    // The vandal rewrites the string library, the string metatable and the task
    // table; the witness (another VM) and the host see none of it.
    let vandal = r#"
local M = {}
function M.start(self)
  string.find = function() return 999 end
  getmetatable("").__index = { find = function() return 999 end }
  rawset(task, "id", "hijacked")
  pcall(function() task.id = "hijacked-too" end)
  _G.blackboard = nil
end
return M
"#;
    let reader = r#"
local M = {}
function M.start(self)
  sleep(50)
  task.output("reader", { find = ("abc"):find("b"), id = task.id })
end
return M
"#;
    let report = run(&[("vandal.lua", vandal), ("reader.lua", reader)], config()).await;
    assert!(report.errors.is_empty(), "{report:#?}");
    assert_eq!(
        report.outputs["reader"],
        json!({ "find": 2, "id": "sandbox" })
    );
    assert_eq!(report.task_id, "sandbox");
    assert_rest_intact(&report);
}
