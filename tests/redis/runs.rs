//! Whole runs in this process on both stores: the same scripts, the same
//! results; and on Redis, the store's metric totals equal the report's.

use std::path::Path;
use std::sync::Arc;

use orrery::config::Config;
use orrery::orchestrator::Orchestrator;
use orrery::report::{RunReport, TaskStatus};
use orrery::scripts::ScriptRegistry;
use orrery::store::Store;
use orrery::task::Task;
use serde_json::json;

use crate::common::{Backend, RedisServer, Scratch, repo, run_in_process, task};
use crate::util::open;

/// Runs `task` with the scripts in `scripts` on `backend`, keeping the store.
async fn run_keeping_store(
    backend: Backend,
    scripts: &Path,
    task: Task,
) -> (RunReport, Arc<dyn Store>, Option<RedisServer>) {
    let opened = open(backend).await;
    let config = Config {
        scripts: scripts.to_path_buf(),
        store: opened.server.as_ref().map_or("memory".into(), |s| s.url()),
        ..Config::default()
    };
    let registry = Arc::new(ScriptRegistry::load(&config.scripts, &config.stdlib).unwrap());
    let report = Orchestrator::new(task, config, opened.store.clone(), registry)
        .unwrap()
        .run()
        .await
        .unwrap();
    (report, opened.store.clone(), opened.server)
}

/// Runs task `id` with one agent per entry of `roles`, from the scripts of `scratch`.
async fn run_roles(
    backend: Backend,
    scratch: &Scratch,
    id: &str,
    roles: &[&str],
) -> (RunReport, Arc<dyn Store>, Option<RedisServer>) {
    let mut t = task(id, 30_000);
    t.agents = Some(roles.iter().map(|r| r.to_string()).collect());
    run_keeping_store(backend, &scratch.scripts(), t).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_task_runs_alike_on_both_stores() {
    let mut outputs = Vec::new();
    for backend in Backend::all() {
        let task = Task::load(&repo().join("examples/deploy.toml")).unwrap();
        let report =
            run_in_process(backend, &repo().join("scripts"), task, Config::default()).await;
        assert_eq!(
            report.status,
            TaskStatus::Complete,
            "{backend:?}: {}",
            report.summary()
        );
        assert_eq!(
            report.agents_used,
            ["alpha-1", "beta-1", "gamma-1"],
            "{backend:?}"
        );
        outputs.push(report.outputs);
    }
    assert_eq!(
        outputs[0], outputs[1],
        "both stores produce the same outputs"
    );
}

/// Counted locally, flushed with HINCRBY: what the store holds at the end is
/// exactly what the run reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_metrics_equal_the_report() {
    let task = Task::load(&repo().join("examples/deploy.toml")).unwrap();
    let (report, store, _server) =
        run_keeping_store(Backend::Redis, &repo().join("scripts"), task).await;
    let stored = store.metrics_get("deploy-001").await.unwrap();
    let m = &report.metrics;
    let mut expected = vec![
        ("blackboard_writes".to_string(), m.blackboard_writes as i64),
        ("blackboard_reads".to_string(), m.blackboard_reads as i64),
        ("spawn_events".to_string(), m.spawn_events as i64),
    ];
    for (id, a) in &m.agent_metrics {
        expected.push((format!("agent.{id}.messages_sent"), a.messages_sent as i64));
        expected.push((
            format!("agent.{id}.messages_received"),
            a.messages_received as i64,
        ));
        expected.push((format!("agent.{id}.errors"), a.errors as i64));
    }
    for (name, v) in &m.custom {
        expected.push((format!("custom.{name}"), *v));
    }
    assert!(m.blackboard_writes > 0 && m.blackboard_reads > 0);
    for (name, value) in expected {
        // Counters that stayed at zero are never written.
        assert_eq!(
            stored.get(&name).copied().unwrap_or(0),
            value,
            "counter {name}: {stored:?}"
        );
    }
}

const WRITER: &str = r#"
local M = {}
function M.on_message(self, msg)
  for i = 1, 20 do blackboard.set("item/" .. i, i) end
  blackboard.delete("item/1")
  agent.finish()
end
return M
"#;

const WATCHER: &str = r#"
local M = {}
function M.start(self)
  self.sum, self.deleted = 0, 0
  blackboard.watch("item/*", function(key, value)
    if value == nil then
      self.deleted = self.deleted + 1
    else
      self.sum = self.sum + value
    end
    blackboard.set("seen", { sum = self.sum, deleted = self.deleted })
  end)
  -- Watching from now on: let the writer start.
  bus.send("writer", "ready", {})
end
return M
"#;

/// Every change reaches the watchers before the task is declared quiet, even
/// though on Redis each change travels through the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_every_change_before_the_end() {
    let scratch = Scratch::new(&[("writer.lua", WRITER), ("watcher.lua", WATCHER)]);
    for backend in Backend::all() {
        let (report, store, _server) =
            run_roles(backend, &scratch, "watch", &["watcher", "writer"]).await;
        assert_eq!(
            report.status,
            TaskStatus::Complete,
            "{backend:?}: {}",
            report.summary()
        );
        assert_eq!(
            store.bb_get("watch", "seen").await.unwrap(),
            Some(json!({ "sum": 210, "deleted": 1 })),
            "{backend:?}"
        );
    }
}

const SHOUTER: &str = r#"
local M = {}
function M.start(self) bus.broadcast("hello", { from = agent.id }) end
return M
"#;

const LISTENER: &str = r#"
local M = {}
function M.on_message(self, msg)
  blackboard.set("heard/" .. agent.id, msg.payload.from)
  agent.finish()
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_reach_every_agent() {
    let scratch = Scratch::new(&[("shouter.lua", SHOUTER), ("listener.lua", LISTENER)]);
    for backend in Backend::all() {
        let (report, store, _server) = run_roles(
            backend,
            &scratch,
            "shout",
            &["listener", "listener", "shouter"],
        )
        .await;
        assert_eq!(
            report.status,
            TaskStatus::Complete,
            "{backend:?}: {}",
            report.summary()
        );
        assert_eq!(
            store.bb_keys("shout", "heard/").await.unwrap(),
            ["heard/listener-1", "heard/listener-2"],
            "{backend:?}"
        );
    }
}

pub const SENDER: &str = r#"
local M = {}
function M.start(self) bus.send("failing", "job", { n = 1 }) end
return M
"#;

pub const FAILING: &str = r#"
local M = {}
function M.on_message(self, msg)
  metrics.incr("tries")
  error("cannot do job " .. msg.payload.n)
end
return M
"#;

/// A handler that keeps failing gets the message `max_attempts` times, then
/// it is dead-lettered, and the task still ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_handlers_dead_letter_alike() {
    let scratch = Scratch::new(&[("sender.lua", SENDER), ("failing.lua", FAILING)]);
    for backend in Backend::all() {
        let (report, store, _server) =
            run_roles(backend, &scratch, "dead", &["failing", "sender"]).await;
        assert_eq!(
            report.metrics.custom["tries"],
            5,
            "{backend:?}: {}",
            report.summary()
        );
        assert!(
            report
                .errors
                .iter()
                .any(|e| e.message.contains("dead-lettered after 5 attempts")),
            "{backend:?}: {}",
            report.summary()
        );
        let list = store.queue_list("dead").await.unwrap();
        assert_eq!(list.len(), 1, "{backend:?}: {list:?}");
        assert_eq!(
            (list[0].state.as_str(), list[0].envelope.attempts),
            ("dead", 5),
            "{backend:?}"
        );
    }
}

/// Records that it ran, under its own id.
const ONE: &str = r#"
local M = {}
function M.start(self)
  task.output("ran_" .. agent.id, true)
  agent.finish()
end
return M
"#;

/// A run cut off after it recorded the task but before it recorded its
/// first agents (its process killed then): `resume` starts the initial
/// roles, instead of bringing back nothing and ending at once, complete
/// with no outputs (a fleet worker killed at a task's start did that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_starts_the_agents_a_run_cut_off_at_its_start_never_recorded() {
    let opened = open(Backend::Redis).await;
    let scratch = Scratch::new(&[("one.lua", ONE)]);
    let mut t = task("cut-at-start", 30_000);
    t.agents = Some(vec!["one".into(), "one".into()]);
    let store = opened.store.clone();
    let record = orrery::store::TaskRecord {
        definition: serde_json::to_value(&t).unwrap(),
        status: orrery::store::RunStatus::Running,
        owner: "gone:1-dead".into(),
        roles: vec!["one".into()],
        started_ms: orrery::coordination::now_ms(),
        ended_ms: None,
        journal: true,
        heartbeat_interval: 1000,
    };
    store.task_put(&t.id, &record).await.unwrap();
    let config = Config {
        scripts: scratch.scripts(),
        store: opened.server.as_ref().unwrap().url(),
        heartbeat_interval: 100,
        ..Config::default()
    };
    let registry = Arc::new(ScriptRegistry::load(&config.scripts, &config.stdlib).unwrap());
    let report = Orchestrator::resume(&t.id, config, store, registry)
        .await
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(report.status, TaskStatus::Complete, "{report:#?}");
    assert_eq!(
        serde_json::to_value(&report.outputs).unwrap(),
        json!({"ran_one-1": true, "ran_one-2": true}),
        "{report:#?}"
    );
}
