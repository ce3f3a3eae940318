//! Writes sent without waiting (`blackboard.set`, `bus.send` on the Redis
//! store): they keep their order, an agent reads its own writes back, what
//! another agent wrote before a message is seen by its receiver, and a write
//! the server refused fails the agent's next store call, naming the write.

use std::sync::Arc;

use orrery::config::Config;
use orrery::orchestrator::Orchestrator;
use orrery::report::{RunReport, TaskStatus};
use orrery::scripts::ScriptRegistry;
use serde_json::json;

use crate::common::{RedisServer, Scratch, task};

/// Runs the roles of `scratch` (one agent each, in `roles` order) on `server`.
async fn run(
    server: &RedisServer,
    scratch: &Scratch,
    id: &str,
    roles: &[&str],
) -> orrery::error::Result<RunReport> {
    let config = Config {
        scripts: scratch.scripts(),
        store: server.url(),
        ..Config::default()
    };
    let mut t = task(id, 60_000);
    t.agents = Some(roles.iter().map(|r| r.to_string()).collect());
    let store = orrery::store::open(&config.store, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let registry = Arc::new(ScriptRegistry::load(&config.scripts, &config.stdlib).unwrap());
    Orchestrator::new(t, config, store, registry)
        .unwrap()
        .run()
        .await
}

const WRITER: &str = r#"
-- A thousand writes of one key, each read back at once; then the reader is
-- told. It overwrites the key and answers; the writer must see its value,
-- not the one it wrote itself.
local M = {}
function M.start(self)
  for i = 1, 1000 do
    blackboard.set("k", i)
    blackboard.set("list/" .. i, { i = i })
    assert(blackboard.get("k") == i, "read back " .. tostring(blackboard.get("k")) .. " for " .. i)
  end
  bus.send("reader-1", "written", {})
  local answer = bus.receive(30000)
  assert(answer and answer.type == "overwritten", "no answer")
  -- The receive observed the store: the writer's own value is not read back blindly.
  task.output("after_receive", blackboard.get("k"))
  bus.send("reader-1", "again", {})
end
function M.on_message(self, msg)
  -- A new callback: what the reader wrote before its message is what the writer sees.
  task.output("in_handler", blackboard.get("k"))
  agent.finish()
end
return M
"#;

const READER: &str = r#"
local M = {}
function M.on_message(self, msg)
  if msg.type == "written" then
    task.output("seen_k", blackboard.get("k"))
    task.output("seen_last", blackboard.get("list/1000"))
    task.output("seen_keys", #blackboard.keys("list/"))
    blackboard.set("k", "reader")
    bus.send(msg.from, "overwritten", {})
  else
    blackboard.set("k", "reader again")
    bus.send(msg.from, "last", {})
    agent.finish()
  end
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_keep_their_order_and_reach_the_next_reader() {
    let server = RedisServer::start();
    let scratch = Scratch::new(&[("writer.lua", WRITER), ("reader.lua", READER)]);
    let report = run(&server, &scratch, "order", &["reader", "writer"])
        .await
        .unwrap();
    assert_eq!(report.status, TaskStatus::Complete, "{:#?}", report.errors);
    let out = &report.outputs;
    assert_eq!(out["seen_k"], json!(1000), "{out:?}");
    assert_eq!(out["seen_last"], json!({ "i": 1000 }), "{out:?}");
    assert_eq!(out["seen_keys"], json!(1000), "{out:?}");
    assert_eq!(out["after_receive"], json!("reader"), "{out:?}");
    assert_eq!(out["in_handler"], json!("reader again"), "{out:?}");
}

const REFUSED: &str = r#"
local M = {}
function M.start(self)
  blackboard.set("ready", true)
  assert(bus.receive(30000), "never told to go")
  blackboard.set("doomed", 1)
  -- The set returned at once; the server's refusal comes with the next store
  -- call, even a read of the very key the agent wrote (never its own value).
  local ok, err = pcall(blackboard.get, "doomed")
  assert(not ok, "the refused write went unnoticed")
  assert(tostring(err):find("blackboard set 'doomed'", 1, true), "not named: " .. tostring(err))
  blackboard.set("doomed again", 2)
end
return M
"#;

/// Once the agent of task `id` is ready, makes the task's blackboard index
/// a string, so every blackboard write of the task is refused by the server
/// (WRONGTYPE), and tells the agent to go on.
async fn break_the_index_when_ready(url: String, id: &str) {
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    loop {
        let ready: Option<String> = redis::cmd("GET")
            .arg(format!("task:{id}:blackboard:ready"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if ready.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let () = redis::cmd("SET")
        .arg(format!("task:{id}:bbindex"))
        .arg("not a sorted set")
        .query_async(&mut conn)
        .await
        .unwrap();
    let go = orrery::store::Envelope {
        id: "go".into(),
        from: "test".into(),
        to: "refused-1".into(),
        kind: "go".into(),
        payload: serde_json::Value::Null,
        attempts: 0,
        reply_to: None,
    };
    crate::util::connect(&url)
        .await
        .queue_push(id, "refused-1", &go)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_fails_the_next_store_call_and_the_callback() {
    let server = RedisServer::start();
    let scratch = Scratch::new(&[("refused.lua", REFUSED)]);
    let breaker = tokio::spawn(break_the_index_when_ready(server.url(), "refused"));
    let run = run(&server, &scratch, "refused", &["refused"]).await;
    breaker.await.unwrap();
    // The report cannot be made either (it lists the task's outputs).
    let error = run.expect_err("the blackboard of the task is broken");
    assert!(error.to_string().contains("WRONGTYPE"), "{error}");
    // The first refusal was caught by the script at the get (its assert held);
    // the second was left to the end of the callback, which failed the agent.
    let store = crate::util::connect(&server.url()).await;
    let record = store
        .agent_get("refused", "refused-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.phase, "FAILED", "{record:?}");
    let why = record.error.unwrap_or_default();
    assert!(
        why.contains("blackboard set 'doomed again'") && why.contains("WRONGTYPE"),
        "{why}"
    );
}
