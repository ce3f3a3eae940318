//! A task that runs out of time stops its agents and still reports what it
//! has: status `timeout`, partial outputs, metrics, agents moved to FAILED.

use orrery::config::Config;
use orrery::report::TaskStatus;
use serde_json::{Value, json};

use crate::common::{Backend, Scratch, orrery, show};
use crate::util::{output, phases, run, show_report, task_with_timeout};

const SLOW: &str = r#"
local M = {}
function M.start(self)
  state.set("EXECUTING")
  task.output("partial", { step = 1 })
  metrics.incr("before_sleep")
  sleep(60000)
  task.output("never", true)
end
return M
"#;

const WAITER: &str = r#"
local M = {}
function M.start(self)
  bus.receive(60000)
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_times_out_stops_its_agents_and_reports_what_it_has() {
    for backend in Backend::all() {
        let report = run(
            backend,
            &[("slow.lua", SLOW), ("waiter.lua", WAITER)],
            task_with_timeout("timeout", 300, ""),
            Config::default(),
        )
        .await;
        assert_eq!(
            report.status,
            TaskStatus::Timeout,
            "{}",
            show_report(&report)
        );
        assert_eq!(report.exit_code(), orrery::error::exit::TIMEOUT);
        assert_eq!(output(&report, "partial"), &json!({"step": 1}));
        assert!(!report.outputs.contains_key("never"));
        assert_eq!(report.metrics.custom["before_sleep"], 1);
        assert!(report.metrics.end_time.is_some());
        assert_eq!(
            phases(&report, "slow-1"),
            ["INIT", "READY", "EXECUTING", "FAILED"]
        );
        assert_eq!(phases(&report, "waiter-1"), ["INIT", "READY", "FAILED"]);
        for id in ["slow-1", "waiter-1"] {
            let e = report
                .errors
                .iter()
                .find(|e| e.agent == id)
                .unwrap_or_else(|| panic!("no error for {id}: {}", show_report(&report)));
            assert_eq!(e.kind, "timeout");
            assert!(e.fatal);
            assert!(
                e.message.contains("exceeded 300 ms") && e.message.contains(id),
                "{}",
                e.message
            );
        }
    }
}

#[test]
fn timeout_exits_with_its_own_code_and_prints_the_partial_report() {
    let scratch = Scratch::new(&[("slow.lua", SLOW)]);
    scratch.write(
        "task.toml",
        "id = \"slow\"\ntype = \"test\"\ndescription = \"d\"\ntimeout = 60000\n",
    );
    let out = orrery(
        scratch.path(),
        &["run", "task.toml", "--json", "--timeout", "300"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "timeout");
    assert_eq!(report["outputs"]["partial"], json!({"step": 1}));
    assert_eq!(
        report["metrics"]["agent_metrics"]["slow-1"]["phases"],
        json!(["INIT", "READY", "EXECUTING", "FAILED"])
    );
    assert_eq!(report["errors"][0]["kind"], "timeout");
}

/// The exit code is that of the first fatal error the report lists: when
/// time ran out, that is a timeout, whatever an agent raised before it, and
/// even when `[success]` allows the agents it cut off to fail (the task's
/// own timeout is listed then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_run_lists_a_timeout_as_its_first_fatal_error() {
    for backend in Backend::all() {
        let broken_first = run(
            backend,
            &[("broken.lua", "error('boom')"), ("slow.lua", SLOW)],
            task_with_timeout("timeout-first", 300, ""),
            Config::default(),
        )
        .await;
        let allowed = run(
            backend,
            &[("slow.lua", SLOW)],
            task_with_timeout(
                "timeout-allowed",
                300,
                "[success]\nallow_failed_agents = true\n",
            ),
            Config::default(),
        )
        .await;
        for report in [&broken_first, &allowed] {
            assert_eq!(
                report.status,
                TaskStatus::Timeout,
                "{}",
                show_report(report)
            );
            let first = report
                .errors
                .iter()
                .find(|e| e.fatal)
                .unwrap_or_else(|| panic!("no fatal error: {}", show_report(report)));
            assert_eq!(first.kind, "timeout", "{}", show_report(report));
            assert_eq!(first.exit_code, report.exit_code());
            assert!(
                first.message.contains("exceeded 300 ms"),
                "{}",
                first.message
            );
        }
        assert!(
            broken_first
                .errors
                .iter()
                .any(|e| e.kind == "script" && e.message.contains("boom")),
            "{}",
            show_report(&broken_first)
        );
        let cut_off = allowed.errors.iter().find(|e| e.agent == "slow-1");
        assert!(
            cut_off.is_some_and(|e| e.allowed && !e.fatal),
            "{}",
            show_report(&allowed)
        );
    }
}

const SPINNER: &str = r#"
local M = {}
function M.start(self)
  task.output("spinning", true)
  local x = 0
  while true do x = x + 1 end
end
return M
"#;

/// An agent busy in Lua stops when the task's time is up, not when its own
/// callback budget (here a minute) runs out: the abort reached only agents
/// waiting on the host, and Ctrl-C or SIGTERM waited out `callback_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_timeout_stops_an_agent_busy_in_lua() {
    let config = Config {
        callback_timeout: 60_000,
        ..Config::default()
    };
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        run(
            Backend::Memory,
            &[("spinner.lua", SPINNER)],
            task_with_timeout("spin-timeout", 300, ""),
            config,
        ),
    )
    .await
    .expect("the run ends at the task's timeout, not at callback_timeout");
    assert_eq!(
        report.status,
        TaskStatus::Timeout,
        "{}",
        show_report(&report)
    );
    assert_eq!(output(&report, "spinning"), true);
    assert_eq!(phases(&report, "spinner-1").last().unwrap(), "FAILED");
}

const PRODUCER: &str = r#"
local M = {}
function M.start(self)
  bus.send("w", "spin", {})
  bus.send("w", "ok", { n = 1 })
  sleep(1500)
  bus.send("w", "ok", { n = 2 })
end
return M
"#;

const POOL_WORKER: &str = r#"
local M = {}
function M.on_message(self, msg)
  if msg.type == "spin" then while true do end end
  task.output("ok" .. msg.payload.n, agent.id)
end
return M
"#;

/// A message whose handler runs past `callback_timeout` fails like one whose
/// handler raises: given back, dead-lettered after `max_attempts`, and the
/// agents go on. It failed each agent that took it, so one message took
/// down the role's whole pool and the work queued behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_past_its_callback_timeout_fails_the_message_not_the_agent() {
    let config = Config {
        callback_timeout: 200,
        max_attempts: 2,
        redelivery_backoff: 10,
        ..Config::default()
    };
    let report = run(
        Backend::Memory,
        &[("p.lua", PRODUCER), ("w.lua", POOL_WORKER)],
        task_with_timeout("poison", 20_000, r#"agents = ["p", "w", "w"]"#),
        config,
    )
    .await;
    let shown = show_report(&report);
    assert!(report.outputs.contains_key("ok1"), "{shown}");
    assert!(
        report.outputs.contains_key("ok2"),
        "the pool lives on: {shown}"
    );
    for id in ["w-1", "w-2"] {
        assert_ne!(phases(&report, id).last().unwrap(), "FAILED", "{shown}");
    }
    // The message itself is a dead letter: the run lost work.
    assert_eq!(report.status, TaskStatus::Failed, "{shown}");
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.kind == "dead_letter" || e.message.contains("dead-lettered")),
        "{shown}"
    );
}
