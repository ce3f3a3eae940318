//! Agents do not cost server connections: three processes joining one task,
//! six agents each, all waiting for a message at once, hold three
//! connections per process at most (the shared one, the blocking reader's,
//! and the blackboard events' once something watches).

use std::time::{Duration, Instant};

use orrery::store::Envelope;

use crate::common::{RedisServer, Scratch, spawn_orrery};
use crate::multiprocess::{PATIENCE, task_file};
use crate::util::connect;

const WAITER: &str = r#"
local M = {}
function M.start(self)
  blackboard.update("ready", function(n) return (n or 0) + 1 end)
  local go = bus.receive(120000)
  assert(go and go.type == "go", "no go")
end
return M
"#;

/// Clients connected to the server now (this test's own one included).
async fn clients(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_of_six_waiting_agents_hold_three_connections_each() {
    let server = RedisServer::start();
    let url = server.url();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut probe = client.get_multiplexed_async_connection().await.unwrap();
    let scratch = Scratch::new(&[("waiter.lua", WAITER)]);
    let file = task_file(&scratch, "crowd", &["waiter"; 6]);
    let mut owner = spawn_orrery(
        scratch.path(),
        &["run", &file, "--store", &url, "--max-agents", "18"],
        &[],
    );
    owner.wait_for("waiter-1   - -> INIT", PATIENCE);
    let mut join = vec![
        "run",
        "--join",
        "crowd",
        "--store",
        &url,
        "--max-agents",
        "18",
    ];
    for _ in 0..6 {
        join.extend(["--role", "waiter"]);
    }
    let joiners = [
        spawn_orrery(scratch.path(), &join, &[]),
        spawn_orrery(scratch.path(), &join, &[]),
    ];

    // Wait until all 18 agents said they are ready, watching the count.
    let mut peak = 0;
    let deadline = Instant::now() + PATIENCE;
    loop {
        peak = peak.max(clients(&mut probe).await - 1);
        let ready: Option<String> = redis::cmd("GET")
            .arg("task:crowd:blackboard:ready")
            .query_async(&mut probe)
            .await
            .unwrap();
        if ready.as_deref() == Some("18") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {ready:?} of 18 agents ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Some are still on their way into their wait: look a while longer.
    for _ in 0..25 {
        peak = peak.max(clients(&mut probe).await - 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("18 agents in 3 processes, all waiting: at most {peak} server connections");
    assert!(
        peak >= 3,
        "each process holds its shared connection: {peak}"
    );
    assert!(peak <= 9, "{peak} connections for 3 processes");

    let store = connect(&url).await;
    for n in 0..18 {
        let go = Envelope {
            id: format!("go-{n}").into(),
            from: "test".into(),
            to: "waiter".into(),
            kind: "go".into(),
            payload: serde_json::Value::Null,
            attempts: 0,
            reply_to: None,
        };
        store.queue_push("crowd", "waiter", &go).await.unwrap();
    }
    let owned = owner.finish(PATIENCE);
    assert_eq!(owned.code, Some(0), "owner: {}", owned.show());
    for j in joiners {
        let joined = j.finish(PATIENCE);
        assert_eq!(joined.code, Some(0), "joiner: {}", joined.show());
    }
}
