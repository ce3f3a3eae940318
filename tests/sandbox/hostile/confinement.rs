//! Confinement across tasks, on both stores: a hostile task uses every name
//! the API takes (keys, recipients, locks, metrics, triggers, outputs) to
//! look like another task's keys; the other task's state is untouched.

use std::sync::Arc;

use orrery::orchestrator::Orchestrator;
use orrery::scripts::ScriptRegistry;
use orrery::store::{MemoryStore, Store};
use serde_json::json;

use super::{Case, run, start};
use crate::common::{RedisServer, Scratch, orrery, task};

/// Writes state of task `victim`: a key, an output and a counter. (Its lock
/// is taken by the test: the locks an agent holds are released when it
/// ends.)
const VICTIM: &str = r#"
local M = {}
function M.start(self)
  blackboard.set("v", "intact")
  task.output("victim", "intact")
  metrics.incr("count", 7)
end
return M
"#;

/// Aims at the victim's keys through every name the API takes.
const AIMS: &str = r#"
  local names = { "task:victim:blackboard:v", "../victim/v", ":victim:blackboard:v",
    "victim:blackboard:v", "task:victim:meta", "task:{victim}:blackboard:v", "*", "v" }
  for _, n in ipairs(names) do
    blackboard.set(n, "overwritten")
    blackboard.delete(n)
    pcall(bus.send, n, "x", {})
    pcall(lock.acquire, n, { wait = 0 })
    pcall(metrics.incr, n, 1000)
    pcall(spawn.when, { trigger = n, threshold = 0, agent = "witness" })
    pcall(spawn.signal, n, 1)
    task.output(n, "overwritten")
  end
  if #blackboard.keys("task:victim") > 0 and blackboard.get("task:victim:blackboard:v") ~= nil then
    escaped("a deleted key came back")
  end
"#;

#[tokio::test]
async fn a_task_cannot_reach_another_tasks_keys_on_redis() {
    let server = RedisServer::start();
    let url = server.url();
    let victim = Scratch::new(&[("victim.lua", VICTIM)]);
    victim.write(
        "victim.toml",
        "id = \"victim\"\ntype = \"t\"\ndescription = \"d\"\ntimeout = 10000\n",
    );
    let out = orrery(victim.path(), &["run", "victim.toml", "--store", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::common::show(&out));

    let outcome = run(Case {
        hostile: &start(AIMS),
        args: &["--store", &url],
        ..Case::default()
    })
    .await;
    outcome.completed();

    let out = orrery(
        victim.path(),
        &["inspect", "victim", "--store", &url, "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", crate::common::show(&out));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = seen.to_string();
    assert!(!text.contains("overwritten"), "{text}");
    assert!(text.contains("intact"), "{text}");
    assert!(text.contains("\"custom.count\":7"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cannot_reach_another_tasks_keys_on_the_embedded_store() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let cfg = crate::util::config();
    let held = store
        .lock_try_acquire("victim", "l", "victim", std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert!(held.is_some());
    for (id, script) in [("victim", VICTIM.to_string()), ("hostile", start(AIMS))] {
        let scratch = Scratch::new(&[("agent.lua", &script), ("witness.lua", "return {}")]);
        let mut cfg = cfg.clone();
        cfg.scripts = scratch.scripts();
        let mut t = task(id, 10_000);
        t.inputs = json!({ "marker": scratch.path().join("MARKER") });
        t.agents = Some(vec!["agent".into()]);
        let registry = Arc::new(ScriptRegistry::load(&cfg.scripts, &cfg.stdlib).unwrap());
        let report = Orchestrator::new(t, cfg, store.clone(), registry)
            .unwrap()
            .run()
            .await
            .unwrap();
        assert!(report.errors.iter().all(|e| !e.fatal), "{id}: {report:#?}");
    }
    assert_eq!(
        store.bb_keys("victim", "").await.unwrap(),
        ["outputs/victim", "v"]
    );
    assert_eq!(
        store.bb_get("victim", "v").await.unwrap(),
        Some(json!("intact"))
    );
    let metrics = store.metrics_get("victim").await.unwrap();
    assert_eq!(metrics.get("custom.count"), Some(&7), "{metrics:?}");
    // The victim's lock is still its own: nobody else holds or released it.
    assert_eq!(
        store
            .lock_try_acquire("victim", "l", "someone", std::time::Duration::from_secs(1))
            .await
            .unwrap(),
        None
    );
    assert!(store.queue_list("victim").await.unwrap().is_empty());
}
