//! Honest outcomes through the binary: a run that lost work — a
//! dead-lettered message, a failed agent, a watch that raised, a required
//! output never recorded — is not `complete`, and exits with the code of
//! what went wrong, unless the task's `[success]` table allows it.

use serde_json::Value;

use crate::common::{Scratch, orrery, show};

const SENDER: &str = r#"
local M = {}
function M.start(self) bus.send("failing", "job", { n = 1 }) end
return M
"#;

const FAILING: &str = r#"
local M = {}
function M.on_message(self, msg) error("cannot do job " .. msg.payload.n) end
return M
"#;

const SPAWNER: &str = r#"
local M = {}
function M.start(self) bus.send(agent.id, "job", {}) end
function M.on_message(self, msg) spawn.agent("extra") end
return M
"#;

const EXTRA: &str = "return {}\n";

const WRITER: &str = r#"
local M = {}
function M.start(self) task.output("total", 42) end
return M
"#;

const QUITTER: &str = r#"
local M = {}
function M.start(self) error("gave up") end
return M
"#;

const WATCHER: &str = r#"
local M = {}
function M.start(self)
  blackboard.watch("k", function(key, value) error("bad watch of " .. key) end)
  blackboard.set("k", 1)
end
return M
"#;

fn scratch() -> Scratch {
    Scratch::new(&[
        ("sender.lua", SENDER),
        ("failing.lua", FAILING),
        ("spawner.lua", SPAWNER),
        ("extra.lua", EXTRA),
        ("writer.lua", WRITER),
        ("quitter.lua", QUITTER),
        ("watcher.lua", WATCHER),
    ])
}

/// Runs a task of `agents` with the TOML lines `extra` appended; returns
/// the exit code and the JSON report.
fn run(s: &Scratch, agents: &[&str], extra: &str) -> (i32, Value) {
    let agents: Vec<String> = agents.iter().map(|a| format!("\"{a}\"")).collect();
    let task = format!(
        "id = \"outcome\"\ntype = \"test\"\ndescription = \"d\"\ntimeout = 30000\n\
         agents = [{}]\n{extra}",
        agents.join(", ")
    );
    s.write("task.toml", &task);
    let out = orrery(s.path(), &["run", "task.toml", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}):\n{}", show(&out)));
    (out.status.code().expect("exit code"), report)
}

/// The report's errors of `kind`.
fn errors_of<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

#[test]
fn a_dead_lettered_message_fails_the_run_with_the_code_of_its_error() {
    let s = scratch();
    let (code, report) = run(&s, &["sender", "failing"], "");
    assert_eq!(report["status"], "failed", "{report:#}");
    assert_eq!(code, 3, "a script error killed the message: {report:#}");
    let dead: Vec<_> = errors_of(&report, "script")
        .into_iter()
        .filter(|e| e["fatal"] == true)
        .collect();
    assert_eq!(dead.len(), 1, "{report:#}");
    let message = dead[0]["message"].as_str().unwrap();
    assert!(
        message.contains("message 'job'")
            && message.contains("dead-lettered after 5 attempts")
            && message.contains("cannot do job 1"),
        "{message}"
    );
    assert_eq!(dead[0]["agent"], "failing-1");
}

#[test]
fn dead_letters_the_task_allows_leave_the_run_complete() {
    let s = scratch();
    let (code, report) = run(
        &s,
        &["sender", "failing"],
        "[success]\nallow_dead_letters = true\n",
    );
    assert_eq!(
        (code, &report["status"]),
        (0, &"complete".into()),
        "{report:#}"
    );
    let allowed: Vec<_> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["allowed"] == true)
        .collect();
    assert_eq!(
        allowed.len(),
        1,
        "the dead letter is still reported: {report:#}"
    );
    assert_eq!(allowed[0]["fatal"], false);
}

#[test]
fn a_spawn_limit_inside_a_handler_fails_the_run_with_exit_6_as_it_does_in_start() {
    let s = scratch();
    s.write("orrery.toml", "max_agents = 1\n");
    let (code, report) = run(&s, &["spawner"], "");
    assert_eq!(report["status"], "failed", "{report:#}");
    assert_eq!(code, 6, "{report:#}");
    let limits = errors_of(&report, "spawn_limit");
    assert!(
        limits.iter().any(|e| e["fatal"] == true
            && e["message"].as_str().unwrap().contains("dead-lettered")),
        "{report:#}"
    );
}

#[test]
fn a_failed_agent_fails_the_run_unless_the_task_allows_it() {
    let s = scratch();
    let (code, report) = run(&s, &["quitter", "writer"], "");
    assert_eq!(
        (code, &report["status"]),
        (3, &"failed".into()),
        "{report:#}"
    );

    let (code, report) = run(
        &s,
        &["quitter", "writer"],
        "[success]\nallow_failed_agents = true\n",
    );
    assert_eq!(
        (code, &report["status"]),
        (0, &"complete".into()),
        "{report:#}"
    );
    let quit = &errors_of(&report, "script")[0];
    assert_eq!(
        (&quit["fatal"], &quit["allowed"]),
        (&false.into(), &true.into())
    );
}

#[test]
fn a_required_output_never_recorded_exits_9() {
    let s = scratch();
    let (code, report) = run(
        &s,
        &["writer"],
        "[success]\noutputs = [\"total\", \"summary\"]\n",
    );
    assert_eq!(
        (code, &report["status"]),
        (9, &"failed".into()),
        "{report:#}"
    );
    let missing = errors_of(&report, "incomplete");
    assert_eq!(missing.len(), 1, "only 'summary' is missing: {report:#}");
    assert!(
        missing[0]["message"]
            .as_str()
            .unwrap()
            .contains("required output 'summary' was not recorded"),
        "{report:#}"
    );

    let (code, report) = run(&s, &["writer"], "[success]\noutputs = [\"total\"]\n");
    assert_eq!(
        (code, &report["status"]),
        (0, &"complete".into()),
        "{report:#}"
    );
}

#[test]
fn a_watch_that_raises_loses_its_change_and_fails_the_run() {
    let s = scratch();
    let (code, report) = run(&s, &["watcher"], "");
    assert_eq!(
        (code, &report["status"]),
        (3, &"failed".into()),
        "{report:#}"
    );
    let e = &errors_of(&report, "script")[0];
    assert!(
        e["message"].as_str().unwrap().contains("watch of 'k'")
            && e["message"].as_str().unwrap().contains("bad watch of k"),
        "{report:#}"
    );
}

#[test]
fn a_bad_success_table_is_bad_input_naming_the_field() {
    let s = scratch();
    s.write(
        "task.toml",
        "id = \"t\"\ntype = \"test\"\ndescription = \"d\"\n[success]\noutputs = [\"\"]\n",
    );
    let out = orrery(s.path(), &["run", "task.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("task.toml: success.outputs[0]"),
        "{}",
        show(&out)
    );
    s.write(
        "task.toml",
        "id = \"t\"\ntype = \"test\"\ndescription = \"d\"\n[success]\nallow_everything = true\n",
    );
    let out = orrery(s.path(), &["run", "task.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("task.toml:5"),
        "{}",
        show(&out)
    );
}

const FLOOD: &str = r#"
local M = {}
function M.start(self) for i = 1, 300 do bus.send("broken", "job", { n = i }) end end
return M
"#;

const BROKEN: &str = r#"
local M = {}
function M.on_message(self, msg) error("boom") end
return M
"#;

/// A thousand identical errors are one line with a count in the report, and
/// a handful of lines on stderr, not a thousand tracebacks.
/// Runs FLOOD's 300 messages against the handler `broken`, each tried
/// `attempts` times: the scratch directory, the run's output and its JSON
/// report, which lists two errors (the handled one and the dead letters).
fn flood(broken: &str, attempts: &str) -> (Scratch, std::process::Output, Value) {
    let s = Scratch::new(&[("flood.lua", FLOOD), ("broken.lua", broken)]);
    s.write(
        "task.toml",
        "id = \"flood\"\ntype = \"test\"\ndescription = \"d\"\nagents = [\"broken\", \"flood\"]\n",
    );
    let env = [
        ("ORRERY_REDELIVERY_BACKOFF", "0"),
        ("ORRERY_MAX_ATTEMPTS", attempts),
    ];
    let out = crate::common::orrery_env(s.path(), &["run", "task.toml", "--json"], &env);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"].as_array().unwrap().len(), 2, "{report:#}");
    (s, out, report)
}

#[test]
fn a_thousand_identical_errors_are_summarised_with_a_count() {
    let (s, out, report) = flood(BROKEN, "4");
    let errors = report["errors"].as_array().unwrap();
    let handled = errors.iter().find(|e| e["fatal"] == false).unwrap();
    assert_eq!(
        handled["count"], 1200,
        "300 messages x 4 attempts: {report:#}"
    );
    assert!(handled["message"].as_str().unwrap().contains("boom"));
    let dead = errors.iter().find(|e| e["fatal"] == true).unwrap();
    assert_eq!(dead["count"], 300, "{report:#}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let boom_lines = stderr.lines().filter(|l| l.contains("boom")).count();
    assert!(boom_lines <= 10, "{boom_lines} lines:\n{stderr}");
    assert!(
        stderr.contains("(the same error 1000 times so far)"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("stack traceback").count(), 1, "{stderr}");

    let env = [
        ("ORRERY_REDELIVERY_BACKOFF", "0"),
        ("ORRERY_MAX_ATTEMPTS", "4"),
    ];
    let text = crate::common::orrery_env(s.path(), &["run", "task.toml"], &env);
    let summary = String::from_utf8_lossy(&text.stdout);
    assert!(
        summary.contains("(handled) ×1200: message 'job' from flood-1: "),
        "{summary}"
    );
}

const RAISES_TABLE: &str = r#"
local M = {}
function M.on_message(self, msg) error({ code = 1 }) end
return M
"#;

/// A table raised as the error is shown and folded the same each time,
/// whatever its address: one counted entry with the raising line.
#[test]
fn identical_table_errors_fold_into_one_counted_entry() {
    let (_s, out, report) = flood(RAISES_TABLE, "2");
    let errors = report["errors"].as_array().unwrap();
    let handled = errors.iter().find(|e| e["fatal"] == false).unwrap();
    assert_eq!(
        handled["count"], 600,
        "300 messages x 2 attempts: {report:#}"
    );
    let message = handled["message"].as_str().unwrap();
    assert!(
        message.contains("scripts/broken.lua:3: (error object is a table value)\n"),
        "{message}"
    );
    let dead = errors.iter().find(|e| e["fatal"] == true).unwrap();
    assert_eq!(dead["count"], 300, "{report:#}");
    assert!(!report.to_string().contains("table: 0x"), "{report:#}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("table: 0x"),
        "{}",
        show(&out)
    );
}

const RAISES_NAMED_TABLE: &str = r#"
local M = {}
function M.on_message(self, msg)
  error(setmetatable({}, { __name = "X\nERROR forged host line\27[31m" }))
end
return M
"#;

/// A table whose `__name` holds a line feed and an escape (a script
/// dressing its error up as the host's text) still folds, named by its type.
#[test]
fn a_table_error_with_a_forged_name_folds_by_its_type() {
    let (_s, _out, report) = flood(RAISES_NAMED_TABLE, "2");
    let errors = report["errors"].as_array().unwrap();
    let handled = errors.iter().find(|e| e["fatal"] == false).unwrap();
    assert_eq!(handled["count"], 600, "{report:#}");
    let message = handled["message"].as_str().unwrap();
    assert!(
        message.contains("scripts/broken.lua:4: (error object is a table value)\n"),
        "{message}"
    );
    assert!(!report.to_string().contains(": 0x"), "{report:#}");
}
