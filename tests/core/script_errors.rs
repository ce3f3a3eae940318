//! Script errors name the script's `path:line` and carry a traceback: runtime
//! errors, errors raised inside host calls, syntax errors, and `orrery check`.

use orrery::config::Config;
use orrery::report::TaskStatus;
use serde_json::Value;

use crate::common::{Backend, Scratch, orrery, run_in_process, show};
use crate::util::{error_messages, line_of, task};

const BROKEN: &str = r#"local M = {}

local function explode(n)
  error("exploded at " .. n)
end

function M.start(self)
  explode(3)
end

return M
"#;

fn write_task(scratch: &Scratch) {
    scratch.write(
        "task.toml",
        "id = \"errors\"\ntype = \"test\"\ndescription = \"d\"\n",
    );
}

#[test]
fn a_runtime_error_exits_3_with_path_line_and_traceback_on_stderr_and_in_json() {
    let scratch = Scratch::new(&[("broken.lua", BROKEN)]);
    write_task(&scratch);
    let out = orrery(scratch.path(), &["run", "task.toml", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));

    let path = "scripts/broken.lua";
    let raise = line_of(BROKEN, "error(\"exploded");
    let call = line_of(BROKEN, "explode(3)");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "failed");
    let error = &report["errors"][0];
    assert_eq!(error["kind"], "script");
    assert_eq!(error["agent"], "broken-1");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("{path}:{raise}: exploded at 3\n")),
        "{message}"
    );
    assert!(message.contains("stack traceback:"), "{message}");
    assert!(message.contains(&format!("{path}:{call}:")), "{message}");

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{path}:{raise}: exploded at 3")),
        "{}",
        show(&out)
    );
}

/// Each case: a script whose start fails, and the text its error starts with
/// after `path:line: ` (the line holding `needle`).
const HOST_CALL_CASES: &[(&str, &str, &str)] = &[
    (
        "local M = {}\nfunction M.start(self)\n  local x = 1\n  bus.send('ghost', 'hello', {})\nend\nreturn M\n",
        "bus.send",
        "bus.send: recipient 'ghost': no live agent has this id",
    ),
    (
        "local M = {}\nfunction M.start(self)\n  bus.receive('soon')\nend\nreturn M\n",
        "bus.receive",
        "bus.receive: argument #1 'timeout_ms' must be a number of milliseconds, got string",
    ),
    (
        "local M = {}\nfunction M.start(self)\n  spawn.agent('ghost')\nend\nreturn M\n",
        "spawn.agent",
        "spawn.agent: unknown role 'ghost'",
    ),
    (
        "local M = {}\nfunction M.start(self)\n  blackboard.set({ 'not', 'a', 'key' }, 1)\nend\nreturn M\n",
        "blackboard.set",
        "blackboard.set: argument #1 'key' must be a string, got a table",
    ),
    (
        "local M = {}\nfunction M.start(self)\n  pcall(print, 1)\n  bus.send('caller', nil, {})\nend\nreturn M\n",
        "bus.send",
        "bus.send: argument #2 'type' must be a string, got nil",
    ),
    (
        "local M = {}\nfunction M.start(self)\n  blackboard.update('k', 'not a function')\nend\nreturn M\n",
        "blackboard.update",
        "blackboard.update: argument #2 'fn' must be a function, got string",
    ),
    (
        "local M = {}\nfunction M.start(self)\n  metrics.incr('x', 0.5)\nend\nreturn M\n",
        "metrics.incr",
        "metrics.incr: argument #2 'n' must be an integer, got a number",
    ),
    (
        "local M = {}\nfunction M.start(self)\n  lock.acquire('L', { ttl = 'long' })\nend\nreturn M\n",
        "lock.acquire",
        "lock.acquire: option 'ttl' must be a number of milliseconds > 0, got long",
    ),
    (
        "local M = {}\nfunction M.start(self)\n  lock.acquire('L', { ttl = 100, timeout = 5 })\nend\nreturn M\n",
        "lock.acquire",
        "lock.acquire: unknown option 'timeout' (options: ttl, wait)",
    ),
    (
        "local M = {}\nfunction M.start(self)\n  spawn.when({ trigger = 'T', threshold = 1, agent = 'caller', treshold = 2 })\nend\nreturn M\n",
        "spawn.when",
        "spawn.when: unknown option 'treshold' (options: trigger, threshold, agent, repeat)",
    ),
    (
        "local M = {}\nfunction M.start(self)\n  json.encode({}, { pretty = 'yes' })\nend\nreturn M\n",
        "json.encode",
        "json.encode: expected boolean 'pretty', got string",
    ),
    (
        "local M = {}\nfunction M.start(self)\n  local held = lock.acquire('L')\n  lock.with('L', function() end, { wait = 0 })\nend\nreturn M\n",
        "lock.with(",
        "lock.with: timed out waiting for lock 'L'",
    ),
    // A Lua string that is not UTF-8 where the host needs text (a key, a
    // name): said so, not "must be a string, got a string".
    (
        "local M = {}\nfunction M.start(self)\n  blackboard.set('a\\255b', 1)\nend\nreturn M\n",
        "blackboard.set",
        "blackboard.set: argument #1 'key' must be UTF-8 text, got a string that is not (invalid at byte offset 1)",
    ),
    (
        "local M = {}\nfunction M.start(self)\n  bus.send('caller', 't\\255', {})\nend\nreturn M\n",
        "bus.send",
        "bus.send: argument #2 'type' must be UTF-8 text, got a string that is not (invalid at byte offset 1)",
    ),
    (
        "local M = {}\nfunction M.start(self)\n  lock.acquire('l\\255')\nend\nreturn M\n",
        "lock.acquire",
        "lock.acquire: argument #1 'name' must be UTF-8 text, got a string that is not (invalid at byte offset 1)",
    ),
    (
        "local M = {}\nfunction M.start(self)\n  task.output('o\\255', 1)\nend\nreturn M\n",
        "task.output",
        "task.output: argument #1 'name' must be UTF-8 text, got a string that is not (invalid at byte offset 1)",
    ),
    (
        "local M = {}\nfunction M.start(self)\n  task.output('', 1)\nend\nreturn M\n",
        "task.output",
        "task.output: argument #1 'name' must not be empty",
    ),
    (
        "local M = {}\nfunction M.start(self)\n  task.id = 'mine'\nend\nreturn M\n",
        "task.id",
        "task is read-only (tried to set 'id')",
    ),
    (
        "local M = {}\nfunction M.start(self)\n  table.sort({ 3, 1, 2 }, function(a, b) sleep(1) return a < b end)\nend\nreturn M\n",
        "table.sort",
        "attempt to yield across a C-call boundary (a host function that waits",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_raised_inside_a_host_call_points_at_the_script_line() {
    for backend in Backend::all() {
        for (source, needle, expected) in HOST_CALL_CASES {
            let scratch = Scratch::new(&[("caller.lua", source)]);
            let report = run_in_process(
                backend,
                &scratch.scripts(),
                task("host-call-error", ""),
                Config::default(),
            )
            .await;
            assert_eq!(report.status, TaskStatus::Failed, "{needle}");
            let prefix = format!(
                "{}:{}: {expected}",
                scratch.scripts().join("caller.lua").display(),
                line_of(source, needle)
            );
            let errors = error_messages(&report);
            assert!(
                errors[0].starts_with(&prefix),
                "{backend:?} {needle}: expected '{prefix}…', got {errors:#?}"
            );
            assert!(errors[0].contains("stack traceback:"), "{errors:#?}");
            for internal in [
                "__mlua_async_poll",
                "pcall:",
                "get_future",
                "error converting",
                "[orrery]",
            ] {
                assert!(!errors[0].contains(internal), "{needle}: {errors:#?}");
            }
        }
    }
}

const USES_MODULE: &str = "local util = require('lib.util')\nlocal M = {}\nfunction M.start(self)\n  util.check(nil)\nend\nreturn M\n";
const MODULE: &str = "local M = {}\nfunction M.check(v)\n  if v == nil then error('util.check: value is missing', 2) end\nend\nreturn M\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_raised_for_the_caller_by_a_module_points_at_the_caller() {
    for backend in Backend::all() {
        let scratch = Scratch::new(&[("user.lua", USES_MODULE), ("lib/util.lua", MODULE)]);
        let report = run_in_process(
            backend,
            &scratch.scripts(),
            task("module-error", ""),
            Config::default(),
        )
        .await;
        let errors = error_messages(&report);
        let prefix = format!(
            "{}:4: util.check: value is missing",
            scratch.scripts().join("user.lua").display()
        );
        assert!(errors[0].starts_with(&prefix), "{errors:#?}");
        assert!(errors[0].contains("lib/util.lua:3:"), "{errors:#?}");
    }
}

const SYNTAX: &str = "local M = {}\nfunction M.start(self)\n  local x = = 1\nend\nreturn M\n";

#[test]
fn a_syntax_error_fails_the_run_with_path_and_line() {
    let scratch = Scratch::new(&[("typo.lua", SYNTAX)]);
    write_task(&scratch);
    let out = orrery(scratch.path(), &["run", "task.toml", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let message = report["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("scripts/typo.lua:3: unexpected symbol near '='"),
        "{message}"
    );
    assert_eq!(
        report["metrics"]["agent_metrics"]["typo-1"]["phases"],
        serde_json::json!(["INIT", "FAILED"])
    );
}

#[test]
fn check_reports_each_syntax_error_as_path_line_message_and_fails() {
    let scratch = Scratch::new(&[
        ("typo.lua", SYNTAX),
        ("fine.lua", "return {}\n"),
        ("lib/half.lua", "local t = {\n"),
    ]);
    let out = orrery(scratch.path(), &["check", "scripts"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l == "scripts/typo.lua:3: unexpected symbol near '='"),
        "{}",
        show(&out)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("scripts/lib/half.lua:2: ")),
        "{}",
        show(&out)
    );
    assert!(stdout.contains("2 of "), "{}", show(&out));
}

/// A script that is not UTF-8 is a bad script (exit 3), named with the line,
/// column and byte offset of its first invalid byte, by `check` and `run`.
#[test]
fn a_script_that_is_not_utf8_is_a_script_error_naming_its_first_bad_byte() {
    let scratch = Scratch::new(&[("fine.lua", "return {}\n")]);
    write_task(&scratch);
    std::fs::write(
        scratch.path().join("scripts/latin1.lua"),
        b"-- ok\nlocal s = \"caf\xe9\"\nreturn {}\n",
    )
    .unwrap();
    let expected = "scripts/latin1.lua:2: not UTF-8 text: byte 0xe9 at offset 20 \
                    (line 2, column 15) is not valid UTF-8";
    for args in [&["check", "scripts"][..], &["run", "task.toml"][..]] {
        let out = orrery(scratch.path(), args);
        assert_eq!(out.status.code(), Some(3), "{args:?}\n{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(expected),
            "{args:?}\n{}",
            show(&out)
        );
    }
}

/// A script saved with a UTF-8 byte-order mark (some Windows editors do)
/// runs, as Lua's own `lua` runs it; its lines keep their numbers.
#[test]
fn a_script_with_a_byte_order_mark_runs_and_keeps_its_line_numbers() {
    let scratch = Scratch::new(&[("fine.lua", "return {}\n")]);
    scratch.write(
        "task.toml",
        "id = \"bom\"\ntype = \"test\"\ndescription = \"d\"\nagents = [\"marked\"]\n",
    );
    std::fs::write(
        scratch.path().join("scripts/marked.lua"),
        "\u{FEFF}-- saved with a BOM\nreturn { start = function() error('boom') end }\n",
    )
    .unwrap();
    let out = orrery(scratch.path(), &["check", "scripts"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = orrery(scratch.path(), &["run", "task.toml"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("scripts/marked.lua:2: boom"),
        "{}",
        show(&out)
    );
}

#[test]
fn check_passes_on_the_default_scripts() {
    let out = orrery(&crate::common::repo(), &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("ok: "),
        "{}",
        show(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_script_that_returns_no_table_is_named() {
    for backend in Backend::all() {
        let scratch = Scratch::new(&[("empty.lua", "local x = 1\n")]);
        let report = run_in_process(
            backend,
            &scratch.scripts(),
            task("no-table", ""),
            Config::default(),
        )
        .await;
        let errors = error_messages(&report);
        assert!(
            errors[0].starts_with(&format!(
                "{}: a role script must return a table of callbacks",
                scratch.scripts().join("empty.lua").display()
            )),
            "{errors:#?}"
        );
    }
}

const CAUGHT: &str = r#"
local M = {}
function M.start(self)
  local ok, err = pcall(spawn.agent, "ghost")
  local ok2, err2 = pcall(function() blackboard.get({}) end)
  task.output("caught", { tostring(err), tostring(err2) })
end
return M
"#;

/// An error a script catches reads like one it did not: `path:line:`, the
/// function, what is wrong — and no traceback or host frames in the text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caught_host_error_reads_path_line_function_and_what_is_wrong() {
    for backend in Backend::all() {
        let scratch = Scratch::new(&[("catcher.lua", CAUGHT)]);
        let report = run_in_process(
            backend,
            &scratch.scripts(),
            task("caught", ""),
            Config::default(),
        )
        .await;
        let path = scratch.scripts().join("catcher.lua").display().to_string();
        let caught = report.outputs["caught"].clone();
        assert_eq!(
            caught,
            serde_json::json!([
                format!(
                    "{path}:4: spawn.agent: unknown role 'ghost': no {}/ghost.lua",
                    scratch.scripts().display()
                ),
                format!(
                    "{path}:5: blackboard.get: argument #1 'key' must be a string, got a table"
                ),
            ]),
            "{backend:?}"
        );
    }
}

#[test]
fn check_finds_what_run_would_refuse_and_suggests_the_nearest_name() {
    let scratch = Scratch::new(&[
        ("loner.lua", "return 42\n"),
        ("boom.lua", "error('top level broke')\n"),
        (
            "typist.lua",
            "local M = {}\nfunction M.start(self)\n  blackboard.put('k', 1)\n  bus.sendd('x', 't', {})\nend\nreturn M\n",
        ),
        (
            "fine.lua",
            "local M = {}\nfunction M.start(self) bus.send('fine', 'x', {}) end\nreturn M\n",
        ),
    ]);
    let out = orrery(scratch.path(), &["check", "scripts"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in [
        "scripts/loner.lua: a role script must return a table of callbacks (start, on_message, ...), got integer",
        "scripts/typist.lua:3: blackboard.put is not part of the host API (did you mean blackboard.get?)",
        "scripts/typist.lua:4: bus.sendd is not part of the host API (did you mean bus.send?)",
        "4 problems in 3 of ",
    ] {
        assert!(stdout.contains(line), "no {line:?} in\n{}", show(&out));
    }
    assert!(
        stdout.contains("scripts/boom.lua:1: top level broke"),
        "{}",
        show(&out)
    );

    let out = orrery(scratch.path(), &["check", "scripts", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["ok"], false);
    let typo = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "unknown_function" && p["line"] == 4)
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(typo["path"], "scripts/typist.lua");
    assert_eq!(typo["suggestion"], "bus.send");
    let loner = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"] == "scripts/loner.lua")
        .unwrap();
    assert_eq!(loner["kind"], "load");
}
