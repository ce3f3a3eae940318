//! `exec.run` leaves no process behind: what a granted program starts in
//! the background dies with its call, on its timeout, on too much output,
//! when the call is abandoned (the task is stopped) and when the program
//! exits by itself; and a background child holding the output pipe does not
//! keep the call waiting.
//!
//! Each script makes `sh` print (or write to `data/pids`) its own pid and
//! the pids of its background `sleep`s; the test then looks them up in
//! `/proc`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orrery::capabilities::{Capabilities, RoleConfig};
use orrery::config::Config;
use orrery::orchestrator::{Orchestrator, Stopper};
use orrery::report::{RunReport, TaskStatus};
use orrery::scripts::ScriptRegistry;
use serde_json::Value;

use crate::common::{Scratch, task};
use crate::util::config;

/// Long enough for a killed process to be gone on a busy machine; never
/// reached when it works.
const PATIENCE: Duration = Duration::from_secs(30);

/// A task whose role `user` runs `body` in `start`, granted `sh` and the
/// reading of `data/`; `{data}` in `body` stands for that directory's path.
struct Case {
    scratch: Scratch,
    config: Config,
}

impl Case {
    fn new(body: &str) -> Case {
        let scratch = Scratch::new(&[]);
        let data = scratch.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let body = body.replace("{data}", data.to_str().unwrap());
        scratch.write(
            "scripts/user.lua",
            &format!("local M = {{}}\nfunction M.start(self)\n{body}\nend\nreturn M\n"),
        );
        let caps = Capabilities {
            commands: vec!["sh".into()],
            read_files: Some(data),
            ..Capabilities::default()
        };
        let config = Config {
            roles: BTreeMap::from([("user".to_string(), RoleConfig { capabilities: caps })]),
            scripts: scratch.scripts(),
            ..config()
        };
        Case { scratch, config }
    }

    /// Runs the task; `stop`, when given, runs on a thread of its own
    /// meanwhile, with the scratch dir and the run's stopper.
    async fn run(&self, stop: Option<fn(&Path, Stopper)>) -> RunReport {
        let cfg = self.config.clone();
        let registry =
            Arc::new(ScriptRegistry::load(&cfg.scripts, &cfg.stdlib).expect("scripts load"));
        let store = orrery::store::open(&cfg.store, Duration::from_millis(cfg.connect_timeout))
            .await
            .expect("store opens");
        let orchestrator =
            Orchestrator::new(task("exec", 600_000), cfg, store, registry).expect("task accepted");
        let stopper = orchestrator.stopper();
        let dir = self.scratch.path().to_path_buf();
        let stopping = stop.map(|stop| tokio::task::spawn_blocking(move || stop(&dir, stopper)));
        let report = orchestrator.run().await.expect("task runs");
        if let Some(stopping) = stopping {
            stopping.await.expect("the stop ran");
        }
        report
    }

    /// The pids `sh` wrote to `data/pids`.
    fn written_pids(&self) -> Vec<i32> {
        pids(&std::fs::read_to_string(self.scratch.path().join("data/pids")).unwrap())
    }
}

/// Pids `text` holds, one or more per line.
fn pids(text: &str) -> Vec<i32> {
    text.split_whitespace()
        .map(|p| p.parse().unwrap_or_else(|_| panic!("not a pid: {text:?}")))
        .collect()
}

/// True when process `pid` runs (a zombie does not) the program `sh`
/// started: `sh`, `sleep` or `yes`.
fn runs(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ...`
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let comm = &stat[open + 1..close];
    let state = stat[close + 1..].split_whitespace().next().unwrap_or("X");
    !matches!(state, "Z" | "X") && matches!(comm, "sh" | "sleep" | "yes")
}

/// Asserts that no process of `pids` keeps running; kills the survivors
/// before failing.
fn assert_gone(pids: &[i32], what: &str) {
    assert_eq!(pids.len(), 3, "{what}: {pids:?}");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|p| runs(*p)).collect();
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            for p in &left {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &p.to_string()])
                    .status();
            }
            panic!("{what}: processes {left:?} survived the call");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn output(report: &RunReport, name: &str) -> Value {
    report
        .outputs
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("no output {name}: {report:#?}"))
}

/// Writes the pids of `sh` and of two background `sleep`s to `data/pids`,
/// at once (renamed into place), then does `then`.
fn start_two_sleeps(then: &str) -> String {
    format!(
        "echo $$ > {{data}}/pids.new; sleep 1000 & echo $! >> {{data}}/pids.new; \
         sleep 1000 & echo $! >> {{data}}/pids.new; mv {{data}}/pids.new {{data}}/pids; {then}"
    )
}

/// The program exits and leaves two `sleep`s, one holding its stdout: the
/// call returns its output at once (not at its timeout), and both are killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_exits_leaves_nothing_behind_and_returns_at_once() {
    let case = Case::new(
        r#"
  local r = exec.run("sh", { "-c", "sleep 1000 & a=$!; sleep 1000 >/dev/null 2>&1 & echo $$ $a $!" },
    { timeout = 60000 })
  task.output("status", r.status)
  task.output("pids", r.stdout)"#,
    );
    let report = case.run(None).await;
    assert_eq!(report.status, TaskStatus::Complete, "{report:#?}");
    assert_eq!(output(&report, "status"), 0);
    assert_gone(
        &pids(output(&report, "pids").as_str().unwrap()),
        "normal exit",
    );
}

/// On its timeout, the program and the two `sleep`s it waits for are
/// killed. The timeout grows until `sh` had the time to write their pids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_past_its_timeout_is_killed_with_its_group() {
    let case = Case::new(&format!(
        r#"
  for _, ms in ipairs({{ 300, 1000, 4000, 16000, 60000 }}) do
    local ok, err = pcall(exec.run, "sh", {{ "-c", "{}" }}, {{ timeout = ms }})
    task.output("error", tostring(err))
    if pcall(fs.read, "pids") then break end
  end"#,
        start_two_sleeps("wait")
    ));
    let report = case.run(None).await;
    assert_eq!(report.status, TaskStatus::Complete, "{report:#?}");
    let err = output(&report, "error");
    assert!(err.as_str().unwrap().contains("timed out after"), "{err}");
    assert_gone(&case.written_pids(), "timeout");
}

/// Output past `max_value_bytes` kills the program and its `sleep`s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_past_the_output_limit_is_killed_with_its_group() {
    let case = Case::new(&format!(
        r#"
  local ok, err = pcall(exec.run, "sh", {{ "-c", "{}" }}, {{ timeout = 600000 }})
  task.output("error", tostring(err))"#,
        start_two_sleeps("exec yes")
    ));
    let report = case.run(None).await;
    assert_eq!(report.status, TaskStatus::Complete, "{report:#?}");
    let err = output(&report, "error");
    assert!(err.as_str().unwrap().contains("max_value_bytes"), "{err}");
    assert_gone(&case.written_pids(), "output limit");
}

/// A call cut off with its agent (the task stopped twice: the second stop
/// aborts the agents) kills the program and its `sleep`s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cut_off_with_its_agent_kills_the_group() {
    let case = Case::new(&format!(
        r#"
  exec.run("sh", {{ "-c", "{}" }}, {{ timeout = 600000 }})
  task.output("returned", true)"#,
        start_two_sleeps("wait")
    ));
    let stop: fn(&Path, Stopper) = |dir, stopper| {
        let pids = dir.join("data/pids");
        let deadline = Instant::now() + PATIENCE;
        while !pids.exists() {
            assert!(Instant::now() < deadline, "sh never wrote its pids");
            std::thread::sleep(Duration::from_millis(20));
        }
        stopper.stop();
        stopper.stop();
    };
    let report = case.run(Some(stop)).await;
    assert_ne!(report.status, TaskStatus::Complete, "{report:#?}");
    assert!(!report.outputs.contains_key("returned"), "{report:#?}");
    assert_gone(&case.written_pids(), "agent cut off");
}
