//! Key confinement: whatever key a script passes, it stays inside its own
//! task's namespace. Two tasks share one store; task A writes keys that look
//! like paths, separators, globs and other tasks' keys; task B sees none.

use std::sync::Arc;

use orrery::config::Config;
use orrery::orchestrator::Orchestrator;
use orrery::report::{RunReport, TaskStatus};
use orrery::scripts::ScriptRegistry;
use orrery::store::{MemoryStore, Store};
use serde_json::json;

use crate::common::{Backend, RedisServer, Scratch, task};
use crate::util::config;

/// Keys that would escape a naive `task:{id}:blackboard:{key}` or path scheme.
const TRICKY: &[&str] = &[
    "../B/x",
    "..",
    "../../x",
    ":",
    "x:y",
    "*",
    "?",
    "[ab]",
    "task:B:blackboard:x",
    ":B:blackboard:x",
    "}{",
    "{B}",
    "x\\y",
    "%",
    "/",
    "key with spaces",
    "ünïcødé",
];

const WRITER: &str = r#"
local M = {}
function M.start(self)
  local keys = json.decode(task.inputs.keys)
  for i, k in ipairs(keys) do blackboard.set(k, i) end
  local back = {}
  for i, k in ipairs(keys) do back[#back + 1] = blackboard.get(k) end
  local refused = {}
  for _, k in ipairs({ "a\nb", "nul\0", "esc\27[0m", "" }) do
    local ok, e = pcall(blackboard.set, k, 1)
    refused[#refused + 1] = ok and "accepted" or tostring(e):match("^[^\n]*")
  end
  task.output("back", back)
  task.output("refused", refused)
  task.output("glob", blackboard.keys("*"))
  task.output("task_prefix", blackboard.keys("task:"))
end
return M
"#;

const READER: &str = r#"
local M = {}
function M.start(self)
  local seen = {}
  for _, k in ipairs(json.decode(task.inputs.keys)) do
    if blackboard.get(k) ~= nil then seen[#seen + 1] = k end
  end
  task.output("seen", seen)
  task.output("all", blackboard.keys(""))
  task.output("x", blackboard.get("x"))
end
return M
"#;

async fn run_task(store: Arc<dyn Store>, id: &str, script: &str, cfg: &Config) -> RunReport {
    let scratch = Scratch::new(&[("agent.lua", script)]);
    let mut cfg = cfg.clone();
    cfg.scripts = scratch.scripts();
    let mut t = task(id, 60_000);
    t.inputs = json!({ "keys": serde_json::to_string(TRICKY).unwrap() });
    let registry = Arc::new(ScriptRegistry::load(&cfg.scripts, &cfg.stdlib).unwrap());
    Orchestrator::new(t, cfg, store, registry)
        .unwrap()
        .run()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_a_script_passes_escapes_its_task() {
    for backend in Backend::all() {
        let mut cfg = config();
        let _server;
        let store: Arc<dyn Store> = match backend {
            Backend::Memory => Arc::new(MemoryStore::new()),
            Backend::Redis => {
                let server = RedisServer::start();
                cfg.store = server.url();
                _server = server;
                orrery::store::open(
                    &cfg.store,
                    std::time::Duration::from_millis(cfg.connect_timeout),
                )
                .await
                .unwrap()
            }
        };
        let a = run_task(store.clone(), "A", WRITER, &cfg).await;
        assert_eq!(a.status, TaskStatus::Complete, "{backend:?}: {a:#?}");
        let n = TRICKY.len() as i64;
        assert_eq!(
            a.outputs["back"],
            json!((1..=n).collect::<Vec<_>>()),
            "{backend:?}"
        );
        let refused = a.outputs["refused"].as_array().unwrap();
        assert_eq!(refused.len(), 4);
        for r in refused {
            assert!(
                r.as_str().unwrap().contains("no control characters"),
                "{backend:?}: {r}"
            );
        }
        assert_eq!(
            a.outputs["glob"],
            json!(["*"]),
            "{backend:?}: keys('*') is a literal prefix"
        );
        assert_eq!(
            a.outputs["task_prefix"],
            json!(["task:B:blackboard:x"]),
            "{backend:?}"
        );

        let b = run_task(store.clone(), "B", READER, &cfg).await;
        assert_eq!(b.status, TaskStatus::Complete, "{backend:?}: {b:#?}");
        assert_eq!(b.outputs["seen"], json!([]), "{backend:?}");
        // B's `task.output("x", blackboard.get("x"))` had nothing to record.
        assert_eq!(b.outputs.get("x"), None, "{backend:?}");
        let all: Vec<&str> = b.outputs["all"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            all.iter().all(|k| k.starts_with("outputs/")),
            "{backend:?}: B sees {all:?}"
        );
        // And A's keys are all still there, each under A.
        let a_keys = store.bb_keys("A", "").await.unwrap();
        for k in TRICKY {
            assert!(
                a_keys.iter().any(|x| x == k),
                "{backend:?}: {k} missing from A"
            );
        }
    }
}
