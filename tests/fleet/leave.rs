//! `Stopper::leave`, the hand-over a draining worker asks of each task, in
//! process on a real server: the callback in progress runs to its end, no
//! `stop` callback runs, the agent's record stays as stored, the process is
//! recorded as having left, the task goes on (still running) and its lease
//! is free for the process that resumes it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use orrery::config::Config;
use orrery::orchestrator::Orchestrator;
use orrery::report::TaskStatus;
use orrery::scripts::ScriptRegistry;
use orrery::store::HostState;
use serde_json::json;

use crate::common::{Scratch, task};
use crate::util::{PATIENCE, server};

/// Naps in `start` (long enough to be caught mid-callback), then waits for
/// messages; `stop` leaves a mark.
const NAPPER: &str = r#"
local M = {}
function M.start(self)
  blackboard.set("napping", true)
  sleep(400)
  blackboard.set("napped", true)
end
function M.on_message(self, msg) end
function M.stop(self) blackboard.set("stopped", true) end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_lets_the_callback_finish_and_keeps_the_task_for_another() {
    let server = server();
    let scratch = Scratch::new(&[("napper.lua", NAPPER)]);
    // Beats 10 s apart: the lease's own time is 50 s.
    let config = Config {
        scripts: scratch.scripts(),
        store: server.url(),
        heartbeat_interval: 10_000,
        ..Config::default()
    };
    let mut nap = task("nap", 60_000);
    nap.agents = Some(vec!["napper".into()]);
    let registry = Arc::new(ScriptRegistry::load(&config.scripts, &config.stdlib).unwrap());
    let store = orrery::store::open(&config.store, Duration::from_secs(5))
        .await
        .unwrap();
    let orchestrator = Orchestrator::new(nap, config, store.clone(), registry).unwrap();
    let stopper = orchestrator.stopper();
    let run = tokio::spawn(orchestrator.run());
    let deadline = Instant::now() + PATIENCE;
    while store.bb_get("nap", "napping").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the agent never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stopper.leave();
    let report = run.await.unwrap().unwrap();
    assert_eq!(
        report.status,
        TaskStatus::HandedOver,
        "{}",
        report.summary()
    );
    assert_eq!(
        store.bb_get("nap", "napped").await.unwrap(),
        Some(json!(true))
    );
    assert_eq!(store.bb_get("nap", "stopped").await.unwrap(), None);
    let agents = store.agent_list("nap").await.unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].phase, "READY", "{agents:?}");
    let hosts = store.host_list("nap").await.unwrap();
    assert!(
        hosts.iter().all(|h| h.state == HostState::Left),
        "{hosts:?}"
    );
    assert!(store.task_get("nap").await.unwrap().unwrap().is_running());
    // Given up: it expires 1 ms after the leave, where its own time was
    // 5 heartbeats (50 s).
    let deadline = Instant::now() + Duration::from_secs(40);
    while !store
        .lease("nap", "the-next-process", Duration::from_secs(10))
        .await
        .unwrap()
    {
        assert!(
            Instant::now() < deadline,
            "the leaver kept the task's lease"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
