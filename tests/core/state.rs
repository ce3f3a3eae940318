//! `state`: legal and illegal phase transitions, and reading other agents'
//! phases and histories.

use orrery::config::Config;
use orrery::report::TaskStatus;
use serde_json::json;

use crate::common::{Backend, Scratch, run_in_process};
use crate::util::{error_messages, line_of, output, phases, run_clean, task};

const MOVER: &str = r#"
local M = {}
local function try(phase)
  local ok, err = pcall(state.set, phase)
  if ok then return "ok" end
  return tostring(err)
end
function M.start(self)
  local r = {}
  r.at_start = state.get()
  r.planning = try("PLANNING")
  r.skip = try("VALIDATING") -- skipping EXECUTING is legal
  r.backwards = try("EXECUTING")
  r.same = try("VALIDATING")
  r.unknown = try("DANCING")
  r.complete = try("complete") -- names are case-insensitive
  r.out_of_complete = try("EXECUTING")
  r.failed_after_complete = try("FAILED")
  r.at_end = state.get()
  task.output("results", r)
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_move_forward_may_skip_and_never_go_back_or_leave_complete() {
    for backend in Backend::all() {
        let report = run_clean(backend, &[("mover.lua", MOVER)], task("state-moves", "")).await;
        let r = output(&report, "results");
        assert_eq!(r["at_start"], "READY");
        assert_eq!(r["planning"], "ok");
        assert_eq!(r["skip"], "ok");
        assert_eq!(r["complete"], "ok");
        assert_eq!(r["at_end"], "COMPLETE");
        let cases = [
            (
                "backwards",
                "illegal phase transition VALIDATING -> EXECUTING",
            ),
            ("same", "illegal phase transition VALIDATING -> VALIDATING"),
            (
                "out_of_complete",
                "illegal phase transition COMPLETE -> EXECUTING",
            ),
            (
                "failed_after_complete",
                "illegal phase transition COMPLETE -> FAILED",
            ),
        ];
        for (case, fragment) in cases {
            let message = r[case].as_str().unwrap();
            assert!(
                message.contains(fragment) && message.contains("agent 'mover-1'"),
                "{case}: {message}"
            );
        }
        assert!(
            r["out_of_complete"]
                .as_str()
                .unwrap()
                .contains("COMPLETE and FAILED are final")
        );
        let unknown = r["unknown"].as_str().unwrap();
        assert!(
            unknown.contains("phase 'DANCING'") && unknown.contains("INIT, READY, PLANNING"),
            "{unknown}"
        );
        assert_eq!(
            phases(&report, "mover-1"),
            ["INIT", "READY", "PLANNING", "VALIDATING", "COMPLETE"]
        );
    }
}

const BACKWARDS: &str = r#"
local M = {}
function M.start(self)
  state.set("EXECUTING")
  state.set("PLANNING")
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncaught_illegal_transition_is_a_script_error_at_its_line() {
    for backend in Backend::all() {
        let scratch = Scratch::new(&[("back.lua", BACKWARDS)]);
        let report = run_in_process(
            backend,
            &scratch.scripts(),
            task("state-illegal", ""),
            Config::default(),
        )
        .await;
        assert_eq!(report.status, TaskStatus::Failed);
        assert_eq!(report.exit_code(), orrery::error::exit::SCRIPT);
        let expected = format!(
            "{}:{}: state.set('PLANNING') of agent 'back-1': illegal phase transition EXECUTING -> PLANNING",
            scratch.scripts().join("back.lua").display(),
            line_of(BACKWARDS, "state.set(\"PLANNING\")")
        );
        let errors = error_messages(&report);
        assert!(errors[0].starts_with(&expected), "{errors:#?}");
        assert_eq!(
            phases(&report, "back-1"),
            ["INIT", "READY", "EXECUTING", "FAILED"]
        );
    }
}

const OBSERVED: &str = r#"
local M = {}
function M.start(self)
  state.set("PLANNING")
  state.set("EXECUTING")
  bus.send("observer", "look", {})
  assert(bus.receive(20000), "the observer never answered")
end
return M
"#;

const OBSERVER: &str = r#"
local M = {}
function M.start(self)
  local msg = assert(bus.receive(20000), "nothing to observe")
  local other = msg.from
  local history = state.history(other)
  local names, ordered = {}, true
  for i, entry in ipairs(history) do
    names[i] = entry.phase
    if i > 1 and entry.at < history[i - 1].at then ordered = false end
  end
  local agents = {}
  for _, a in ipairs(state.agents()) do agents[a.id] = a.role .. ":" .. a.phase end
  local ok, err = pcall(state.history, "nobody-1")
  task.output("observed", {
    phase = state.get(other),
    history = names,
    ordered = ordered,
    agents = agents,
    unknown_phase = state.get("nobody-1") == nil,
    unknown_history = tostring(err),
  })
  bus.send(other, "seen", {})
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reads_another_agents_phase_and_history() {
    for backend in Backend::all() {
        let report = run_clean(
            backend,
            &[("observed.lua", OBSERVED), ("observer.lua", OBSERVER)],
            task("state-others", ""),
        )
        .await;
        let o = output(&report, "observed");
        assert_eq!(o["phase"], "EXECUTING");
        assert_eq!(
            o["history"],
            json!(["INIT", "READY", "PLANNING", "EXECUTING"])
        );
        assert_eq!(o["ordered"], true);
        assert_eq!(
            o["agents"],
            json!({"observed-1": "observed:EXECUTING", "observer-1": "observer:READY"})
        );
        assert_eq!(o["unknown_phase"], true);
        assert!(
            o["unknown_history"]
                .as_str()
                .unwrap()
                .contains("state.history('nobody-1'): no such agent"),
            "{o:#}"
        );
    }
}
