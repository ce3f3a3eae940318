//! Faults: a server that cannot be reached, one restarted mid-run, one gone
//! for good, and a process killed with SIGKILL in the middle of a task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use orrery::store::{RedisStore, Store};
use serde_json::json;

use crate::common::{
    RedisServer, Scratch, closed_port, orrery, orrery_env, repo, show, spawn_orrery,
};
use crate::multiprocess::{PATIENCE, inspect, task_file};
use crate::util::{connect, envelope, queues};

/// An unreachable server is a Coordination error (exit 5) within the
/// configured bound, naming the URL but never the password.
#[test]
fn an_unreachable_server_fails_within_connect_timeout() {
    let url = format!("redis://user:hunter2@127.0.0.1:{}/0", closed_port());
    let started = Instant::now();
    let out = orrery_env(
        &repo(),
        &["run", "examples/deploy.toml", "--store", &url],
        &[("ORRERY_CONNECT_TIMEOUT", "700")],
    );
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(5), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("redis://user:***@127.0.0.1:"), "{stderr}");
    assert!(stderr.contains("connect_timeout"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    // Not a performance figure: the bound is what keeps it from hanging.
    assert!(took < Duration::from_secs(10), "took {took:?}");

    let inspect = orrery(&repo(), &["inspect", "deploy-001", "--store", &url]);
    assert_eq!(inspect.status.code(), Some(5), "{}", show(&inspect));
}

/// A database the server does not have is a wrong setting (exit 2, naming
/// the store setting), not a server away (exit 5).
#[test]
fn a_database_the_server_does_not_have_is_bad_input() {
    let server = RedisServer::start();
    let url = format!("redis://127.0.0.1:{}/99", server.port);
    let out = orrery(&repo(), &["run", "examples/deploy.toml", "--store", &url]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "setting store '{url}': the server has no database of that number"
        )),
        "{stderr}"
    );
}

const PRODUCER: &str = r#"
local M = {}
function M.start(self)
  for i = 1, 300 do
    bus.send("consumer", "item", { n = i })
    blackboard.set("sent", i)
    if i == 100 then log.info("halfway") end
  end
end
return M
"#;

/// Records the delivery count of each handling of a message, so a message
/// sent twice (two first deliveries) tells from one handled again.
const CONSUMER: &str = r#"
local M = {}
function M.on_message(self, msg)
  blackboard.update("sum", function(s) return (s or 0) + msg.payload.n end)
  blackboard.update("handled/" .. msg.payload.n, function(a)
    a = a or {}
    a[#a + 1] = msg.attempts
    return a
  end)
end
return M
"#;

/// The server is killed and restarted while messages flow: the host
/// reconnects, every message is handled once (none sent twice by a resend,
/// none handled again for a lost acknowledgement), and the task completes.
#[test]
fn a_restarted_server_loses_nothing() {
    let mut server = RedisServer::start_persistent();
    let scratch = Scratch::new(&[("producer.lua", PRODUCER), ("consumer.lua", CONSUMER)]);
    let file = task_file(&scratch, "flow", &["consumer", "producer"]);
    let url = server.url();
    let mut run = spawn_orrery(
        scratch.path(),
        &["run", &file, "--store", &url, "--json"],
        &[("ORRERY_CONNECT_TIMEOUT", "20000")],
    );
    run.wait_for("halfway", PATIENCE);
    server.restart();
    let done = run.finish(PATIENCE);
    assert_eq!(done.code, Some(0), "{}", done.show());

    let state = inspect(&scratch, &server, "flow");
    let bb = &state["blackboard"];
    let handlings = |n: u64| -> Vec<u64> {
        bb[format!("handled/{n}")]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
            .unwrap_or_default()
    };
    let lost: Vec<u64> = (1..=300).filter(|n| handlings(*n).is_empty()).collect();
    // Two first deliveries: the message was in its queue twice (a send
    // resent after the restart applied twice).
    let sent_twice: Vec<u64> = (1..=300)
        .filter(|n| handlings(*n).iter().filter(|a| **a == 1).count() > 1)
        .collect();
    // Delivered again: no handler is cut off here (the process lives
    // through the restart), so none may run twice.
    let again: Vec<(u64, Vec<u64>)> = (1..=300)
        .map(|n| (n, handlings(n)))
        .filter(|(_, h)| h.len() > 1)
        .collect();
    assert!(lost.is_empty(), "never handled: {lost:?}");
    assert!(sent_twice.is_empty(), "sent twice: {sent_twice:?}");
    assert!(again.is_empty(), "handled again: {again:?}");
    assert_eq!(bb["sum"], json!(300 * 301 / 2), "{state:#}");
    assert_eq!(bb["sent"], json!(300));
    assert_eq!(state["pending"], json!([]), "{state:#}");
}

/// The server goes away for good: the run ends with a Coordination error
/// once `connect_timeout` has passed, instead of hanging.
#[test]
fn a_server_gone_for_good_ends_the_run() {
    let mut server = RedisServer::start();
    let scratch = Scratch::new(&[("producer.lua", PRODUCER), ("consumer.lua", CONSUMER)]);
    let file = task_file(&scratch, "gone", &["consumer", "producer"]);
    let url = server.url();
    let mut run = spawn_orrery(
        scratch.path(),
        &["run", &file, "--store", &url],
        &[("ORRERY_CONNECT_TIMEOUT", "1000")],
    );
    run.wait_for("halfway", PATIENCE);
    server.kill();
    let done = run.finish(Duration::from_secs(60));
    assert_eq!(done.code, Some(5), "{}", done.show());
    assert!(done.stderr.contains("unreachable"), "{}", done.show());
    // It ran halfway: not "did not run".
    assert!(
        done.stderr.contains("task 'gone' ended without a report"),
        "{}",
        done.show()
    );
}

const BOSS: &str = r#"
-- Hands one job to the worker role and records who finished it.
local M = {}
function M.start(self)
  local hello = bus.receive(60000)
  assert(hello and hello.type == "joined", "no worker joined")
  bus.send("worker", "job", { n = 1 })
  while true do
    local msg = bus.receive(60000)
    assert(msg, "nobody finished the job")
    if msg.type == "done" then
      blackboard.set("result", msg.payload)
      return
    end
  end
end
return M
"#;

const WORKER: &str = r#"
local M = {}
function M.start(self)
  bus.send("boss-1", "joined", {})
end
function M.on_message(self, msg)
  local grant = lock.acquire("job", { ttl = 1000, wait = 30000 })
  assert(grant, "the lock never came free")
  blackboard.set("fence/" .. agent.id, grant.fence)
  -- Read back before announcing: a write is settled by the agent's next
  -- store call, and this process is about to be killed.
  assert(blackboard.get("fence/" .. agent.id) == grant.fence)
  if agent.id == "worker-1" then
    log.info("holding the job")
    sleep(60000)
  end
  bus.send(msg.from, "done", { by = agent.id, attempts = msg.attempts, fence = grant.fence })
  lock.release(grant)
  agent.finish()
end
return M
"#;

/// A process killed with SIGKILL while its agent holds a lock and an
/// unacknowledged message: the lock expires, the owner finds the process
/// lost, and the message goes to the next agent of the role.
#[test]
fn a_killed_host_gives_back_its_locks_and_messages() {
    let server = RedisServer::start();
    let scratch = Scratch::new(&[("boss.lua", BOSS), ("worker.lua", WORKER)]);
    let file = task_file(&scratch, "crash", &["boss"]);
    let url = server.url();
    let fast = [("ORRERY_HEARTBEAT_INTERVAL", "100")];
    let mut owner = spawn_orrery(scratch.path(), &["run", &file, "--store", &url], &fast);
    owner.wait_for("boss-1     - -> INIT", PATIENCE);
    let join = [
        "run", "--join", "crash", "--role", "worker", "--store", &url,
    ];
    let mut doomed = spawn_orrery(scratch.path(), &join, &fast);
    doomed.wait_for("holding the job", PATIENCE);
    doomed.kill();
    let rescuer = spawn_orrery(scratch.path(), &join, &fast);
    let rescued = rescuer.finish(PATIENCE);
    let owned = owner.finish(PATIENCE);
    assert_eq!(rescued.code, Some(0), "rescuer: {}", rescued.show());
    assert_eq!(owned.code, Some(0), "owner: {}", owned.show());
    assert!(
        owned.stdout.contains("lost with its process"),
        "the owner reports the lost agent: {}",
        owned.show()
    );

    let state = inspect(&scratch, &server, "crash");
    let bb = &state["blackboard"];
    assert_eq!(
        bb["result"],
        json!({ "by": "worker-2", "attempts": 2, "fence": 2 }),
        "{state:#}"
    );
    assert_eq!(bb["fence/worker-1"], json!(1));
    let lost = state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "worker-1")
        .unwrap();
    assert_eq!(lost["phase"], "FAILED", "{state:#}");
    assert!(
        lost["error"].as_str().unwrap().starts_with("lost:"),
        "{state:#}"
    );
    assert_eq!(state["pending"], json!([]), "{state:#}");
}

/// A server restarted without persistence loses the queues and their
/// consumer group: a consumer that was waiting through the restart still gets
/// the next message (the group is made again on NOGROUP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_consumer_survives_a_restart_that_lost_its_group() {
    let mut server = RedisServer::start();
    // Patient enough for a restart on a busy machine.
    let store: Arc<dyn Store> = Arc::new(
        RedisStore::connect(&server.url(), Duration::from_secs(30))
            .await
            .unwrap(),
    );
    let q = queues("worker-1", "worker");
    store
        .queue_push("t", "worker", &envelope("before", "job"))
        .await
        .unwrap();
    let before = store
        .queue_take("t", &q, "worker-1", Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(&*before.unwrap().envelope.id, "before");
    let waiting = tokio::spawn({
        let store = store.clone();
        let q = q.clone();
        async move {
            store
                .queue_take("t", &q, "worker-1", Duration::from_secs(30))
                .await
        }
    });
    server.restart();
    let pusher = connect(&server.url()).await;
    pusher
        .queue_push("t", "worker", &envelope("after", "job"))
        .await
        .unwrap();
    let got = waiting
        .await
        .unwrap()
        .expect("the take rides out the restart");
    assert_eq!(&*got.expect("a message").envelope.id, "after");
}
