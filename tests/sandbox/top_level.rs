//! A script's top level may not wait, on either store: it runs when the
//! script loads (every spawn, every reload, `orrery check`), so every host
//! function that waits or may wait on some store raises there, before doing
//! anything, naming itself and the script's line. And `orrery check`, which
//! runs every role's top level with the role's capabilities, so runs no
//! program and reads no file.

use serde_json::json;

use crate::common::{Backend, Scratch, orrery, show};
use crate::util::{assert_rest_intact, config, fatal, run_on};

/// What the role says a top-level waiting call raises, word for word after
/// the function's name.
const REFUSAL: &str = "a script's top level may not wait: it runs when the script loads";

#[tokio::test]
async fn a_waiting_call_at_the_top_level_fails_the_same_on_both_stores() {
    let top = (
        "top.lua",
        "local limit = blackboard.get(\"limit\") or 10\nreturn { start = function() end }\n",
    );
    for backend in Backend::all() {
        let report = run_on(backend, &[top], config()).await;
        let e = fatal(&report, "top-1");
        assert_eq!(e.kind, "script", "{backend:?}: {report:#?}");
        assert!(
            e.message
                .contains(&format!("top.lua:1: blackboard.get: {REFUSAL}"))
                && e.message.contains("call this from start or a handler"),
            "{backend:?}: {}",
            e.message
        );
        assert_rest_intact(&report);
    }
}

/// Each waiting function, called (under `pcall`) at the top level: what it
/// raised, and then, from `start`, whether a write or a send it was asked to
/// do happened anyway.
const EVERY_WAITING_CALL: &str = r#"
local calls = {
  { "time.sleep", sleep, 1 },
  { "bus.receive", bus.receive, 1 },
  { "bus.send", bus.send, "top", "ping", {} },
  { "bus.request", bus.request, "top", "ping", {}, 10 },
  { "blackboard.set", blackboard.set, "k", "v" },
  { "blackboard.get", blackboard.get, "k" },
  { "blackboard.update", blackboard.update, "k", function(v) return v end },
  { "state.get", state.get },
  { "lock.acquire", lock.acquire, "L", { wait = 0 } },
  { "lock.with", lock.with, "L", function() end },
  { "spawn.agent", spawn.agent, "top" },
  { "task.output", task.output, "o", 1 },
  { "llm.chat", llm.chat, { prompt = "hi" } },
}
local raised = {}
for _, c in ipairs(calls) do
  local ok, err = pcall(c[2], table.unpack(c, 3))
  raised[#raised + 1] = c[1] .. " " .. tostring(ok) .. " " .. tostring(err)
end
local allowed = { json.encode({ 1 }), type(now()), type(every(1000, function() end)) }
local M = {}
function M.start(self)
  task.output("raised", raised)
  task.output("allowed", allowed)
  task.output("k", blackboard.get("k") or "unset")
  task.output("messages", bus.receive(0) and "one" or "none")
  agent.finish()
end
return M
"#;

#[tokio::test]
async fn every_waiting_call_raises_at_the_top_level_before_acting() {
    for backend in Backend::all() {
        let report = run_on(backend, &[("top.lua", EVERY_WAITING_CALL)], config()).await;
        assert!(report.errors.is_empty(), "{backend:?}: {report:#?}");
        let raised = report.outputs["raised"].as_array().unwrap();
        assert_eq!(raised.len(), 13, "{raised:?}");
        for line in raised {
            let line = line.as_str().unwrap();
            let name = line.split(' ').next().unwrap();
            assert!(
                line.starts_with(&format!("{name} false ")) && line.contains(REFUSAL),
                "{backend:?}: {line}"
            );
            // The error names the script's line and the function (`sleep`
            // is `time.sleep` too: Lua names it by either; `lock.with` fails
            // in the `lock.acquire` it calls; the read-only `task` table hides
            // its functions' names from tracebacks).
            let named = line.contains(&format!(": {name}: "))
                || (name == "time.sleep" && line.contains(": sleep: "))
                || (name == "lock.with" && line.contains(": lock.acquire: "))
                || name == "task.output";
            assert!(
                line.contains("top.lua:19: ") && named,
                "{backend:?}: {line}"
            );
        }
        assert_eq!(
            report.outputs["allowed"],
            json!(["[1]", "number", "number"]),
            "{backend:?}"
        );
        assert_eq!(report.outputs["k"], json!("unset"), "{backend:?}");
        assert_eq!(report.outputs["messages"], json!("none"), "{backend:?}");
        assert_eq!(report.outputs.get("o"), None, "{backend:?}");
        assert_rest_intact(&report);
    }
}

#[tokio::test]
async fn a_module_whose_top_level_waits_fails_where_it_is_required() {
    let module = (
        "lib/settings.lua",
        "return { limit = blackboard.get(\"limit\") or 10 }\n",
    );
    let user = (
        "user.lua",
        "local M = {}\nfunction M.start(self)\n  local ok, err = pcall(require, \"lib.settings\")\n  \
         task.output(\"required\", tostring(ok) .. \" \" .. tostring(err))\nend\nreturn M\n",
    );
    for backend in Backend::all() {
        let report = run_on(backend, &[module, user], config()).await;
        let got = report.outputs["required"].as_str().unwrap();
        assert!(
            got.starts_with("false ")
                && got.contains(&format!("settings.lua:1: blackboard.get: {REFUSAL}")),
            "{backend:?}: {got}"
        );
    }
}

#[test]
fn check_runs_no_program_and_reads_no_file_at_the_top_level() {
    let s = Scratch::new(&[]);
    let witness = s.path().join("PWNED");
    s.write(
        "scripts/a.lua",
        &format!(
            "local t = fs.read(\"orrery.toml\")\nexec.run(\"touch\", {{ \"{}\" }})\nreturn {{}}\n",
            witness.display()
        ),
    );
    s.write(
        "scripts/b.lua",
        &format!(
            "local ok, r = pcall(exec.run, \"touch\", {{ \"{}\" }})\nreturn {{}}\n",
            witness.display()
        ),
    );
    s.write(
        "orrery.toml",
        "[roles.a.capabilities]\ncommands = [\"touch\"]\nread_files = \".\"\n\n\
         [roles.b.capabilities]\ncommands = [\"touch\"]\n",
    );
    for _ in 0..3 {
        let out = orrery(s.path(), &["check", "--json"]);
        assert_eq!(out.status.code(), Some(3), "{}", show(&out));
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("stdout is the JSON report");
        let problems = report["problems"].as_array().unwrap();
        assert_eq!(problems.len(), 1, "{}", show(&out));
        assert_eq!(problems[0]["line"], json!(1), "{}", show(&out));
        let message = problems[0]["message"].as_str().unwrap();
        assert!(
            message.ends_with(&format!("a.lua:1: fs.read: {REFUSAL} (at every spawn and reload, and in orrery check), where the host cannot suspend it; call this from start or a handler (or a function they call)")),
            "{message}"
        );
        assert!(!witness.exists(), "check ran the program: {}", show(&out));
    }
}
