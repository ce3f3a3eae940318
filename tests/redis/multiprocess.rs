//! Two real `orrery` processes on one task through one server: each sees the
//! other's blackboard writes, locks and messages.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{RedisServer, Scratch, orrery, show, spawn_orrery};

/// Long enough for a debug build on a busy machine; never reached when it works.
pub const PATIENCE: Duration = Duration::from_secs(120);

const COUNTER: &str = r#"
-- Two counters, one per process, meet, then add 1,000 each to one blackboard
-- key under a lock: get and set are separate calls, so only the lock keeps
-- increments from being lost.
local M = {}

function M.start(self)
  if agent.id == "counter-1" then
    local hello = bus.receive(60000)
    assert(hello and hello.type == "joined", "the second process never joined")
  else
    bus.send("counter-1", "joined", {})
  end
  for _ = 1, 1000 do
    lock.with("count", function()
      blackboard.set("count", (blackboard.get("count") or 0) + 1)
    end, { ttl = 10000, wait = 60000 })
  end
end

return M
"#;

/// A task whose agents are the roles given, on the store of `server`.
pub fn task_file(scratch: &Scratch, id: &str, roles: &[&str]) -> String {
    let roles: Vec<String> = roles.iter().map(|r| format!("\"{r}\"")).collect();
    scratch.write(
        &format!("{id}.toml"),
        &format!(
            "id = \"{id}\"\ntype = \"test\"\ndescription = \"two processes\"\ntimeout = 120000\nagents = [{}]\n",
            roles.join(", ")
        ),
    );
    format!("{id}.toml")
}

/// The task's state as `orrery inspect --json` shows it.
pub fn inspect(scratch: &Scratch, server: &RedisServer, id: &str) -> Value {
    let out = orrery(
        scratch.path(),
        &["inspect", id, "--json", "--store", &server.url()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON")
}

#[test]
fn two_processes_count_to_exactly_two_thousand_under_a_lock() {
    let server = RedisServer::start();
    let scratch = Scratch::new(&[("counter.lua", COUNTER)]);
    let file = task_file(&scratch, "count", &["counter"]);
    let url = server.url();
    let mut owner = spawn_orrery(scratch.path(), &["run", &file, "--store", &url], &[]);
    // The owner has recorded the task once its agent exists.
    owner.wait_for("counter-1  - -> INIT", PATIENCE);
    let joiner = spawn_orrery(
        scratch.path(),
        &[
            "run", "--join", "count", "--role", "counter", "--store", &url,
        ],
        &[],
    );
    let joined = joiner.finish(PATIENCE);
    let owned = owner.finish(PATIENCE);
    assert_eq!(owned.code, Some(0), "owner: {}", owned.show());
    assert_eq!(joined.code, Some(0), "joiner: {}", joined.show());
    assert!(
        joined.stdout.contains("agents: counter-2"),
        "{}",
        joined.show()
    );

    let state = inspect(&scratch, &server, "count");
    assert_eq!(state["blackboard"]["count"], json!(2000), "{state:#}");
    assert_eq!(state["task"]["status"], "complete");
    let phases: Vec<&str> = state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["COMPLETE", "COMPLETE"], "{state:#}");
    let hosts = state["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2, "{state:#}");
    assert!(hosts.iter().all(|h| h["state"] == "left"), "{state:#}");
}

const SENDER: &str = r#"
-- Waits for both receivers, sends one job to their role, waits for the answer.
local M = {}

function M.start(self)
  local joined = 0
  while joined < 2 do
    local msg = bus.receive(60000)
    assert(msg, "the receivers never joined")
    if msg.type == "joined" then joined = joined + 1 end
  end
  bus.send("receiver", "job", { n = 42 })
  local answer = bus.receive(60000)
  assert(answer and answer.type == "done", "no answer to the job")
  blackboard.set("answer", answer.payload)
end

return M
"#;

const RECEIVER: &str = r#"
local M = {}

function M.start(self)
  bus.send("sender-1", "joined", {})
end

function M.on_message(self, msg)
  blackboard.update("handled", function(n) return (n or 0) + 1 end)
  bus.send(msg.from, "done", { by = agent.id, n = msg.payload.n, attempts = msg.attempts })
end

return M
"#;

#[test]
fn a_message_from_one_process_is_handled_once_in_the_other() {
    let server = RedisServer::start();
    let scratch = Scratch::new(&[("sender.lua", SENDER), ("receiver.lua", RECEIVER)]);
    let file = task_file(&scratch, "relay", &["sender"]);
    let url = server.url();
    let mut owner = spawn_orrery(scratch.path(), &["run", &file, "--store", &url], &[]);
    owner.wait_for("sender-1   - -> INIT", PATIENCE);
    let joiner = spawn_orrery(
        scratch.path(),
        &[
            "run", "--join", "relay", "--role", "receiver", "--role", "receiver", "--store", &url,
        ],
        &[],
    );
    let owned = owner.finish(PATIENCE);
    let joined = joiner.finish(PATIENCE);
    assert_eq!(owned.code, Some(0), "owner: {}", owned.show());
    assert_eq!(joined.code, Some(0), "joiner: {}", joined.show());

    let state = inspect(&scratch, &server, "relay");
    let bb = &state["blackboard"];
    assert_eq!(bb["handled"], json!(1), "handled exactly once: {state:#}");
    assert_eq!(bb["answer"]["n"], json!(42));
    assert_eq!(bb["answer"]["attempts"], json!(1));
    let by = bb["answer"]["by"].as_str().unwrap();
    assert!(by == "receiver-1" || by == "receiver-2", "{state:#}");
    assert_eq!(state["pending"], json!([]), "{state:#}");
    assert_eq!(state["dead_letters"], json!([]), "{state:#}");
    // Each process flushed its own counters into the one hash.
    let m = &state["metrics"];
    assert_eq!(m["agent.sender-1.messages_sent"], json!(1), "{state:#}");
    assert_eq!(m["agent.sender-1.messages_received"], json!(3), "{state:#}");
    assert_eq!(
        m[format!("agent.{by}.messages_received")],
        json!(1),
        "{state:#}"
    );
}

#[test]
fn joining_needs_a_running_task_and_a_shared_store() {
    let server = RedisServer::start();
    let scratch = Scratch::new(&[("receiver.lua", RECEIVER)]);
    let url = server.url();
    let missing = orrery(
        scratch.path(),
        &[
            "run", "--join", "nope", "--role", "receiver", "--store", &url,
        ],
    );
    assert_eq!(missing.status.code(), Some(2), "{}", show(&missing));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no task 'nope'"),
        "{}",
        show(&missing)
    );
    let embedded = orrery(
        scratch.path(),
        &["run", "--join", "nope", "--role", "receiver"],
    );
    assert_eq!(embedded.status.code(), Some(2), "{}", show(&embedded));
    assert!(String::from_utf8_lossy(&embedded.stderr).contains("needs a shared store"));
    let no_role = orrery(scratch.path(), &["run", "--join", "nope", "--store", &url]);
    assert_eq!(no_role.status.code(), Some(2), "{}", show(&no_role));
    let unknown = orrery(
        scratch.path(),
        &["run", "--join", "nope", "--role", "nobody", "--store", &url],
    );
    assert_eq!(unknown.status.code(), Some(2), "{}", show(&unknown));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown role 'nobody'"));
}

const WAITER: &str = r#"
local M = {}
function M.start(self) bus.receive(60000) end
return M
"#;

/// A second `orrery run` of a task that is running is refused; one of a
/// task that ended starts afresh.
#[test]
fn a_running_task_cannot_be_started_twice() {
    let server = RedisServer::start();
    let scratch = Scratch::new(&[("waiter.lua", WAITER), ("receiver.lua", RECEIVER)]);
    let file = task_file(&scratch, "once", &["waiter"]);
    let url = server.url();
    let mut first = spawn_orrery(scratch.path(), &["run", &file, "--store", &url], &[]);
    first.wait_for("waiter-1   - -> INIT", PATIENCE);
    let second = orrery(scratch.path(), &["run", &file, "--store", &url]);
    assert_eq!(second.status.code(), Some(5), "{}", show(&second));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("already running") && stderr.contains("--join once"),
        "{stderr}"
    );
    first.kill();
}

const QUICK: &str = r#"
-- Ends as soon as the other process's agent is there: the owner then runs
-- no agent of its own.
local M = {}
function M.start(self)
  local hello = bus.receive(60000)
  assert(hello and hello.type == "joined", "the other process never joined")
end
return M
"#;

const TICKER: &str = r#"
local M = {}
function M.start(self)
  bus.send("quick-1", "joined", {})
  every(100, "tick")
end
function M.tick(self) blackboard.set("ticked", now()) end
return M
"#;

/// The owner decides the task's end: when the timeout reaches it with no
/// agent of its own left (a joined process does the work), its report still
/// lists the timeout, as the error its exit code 4 stands for.
#[test]
fn an_owner_without_agents_reports_the_timeout_it_ends_the_task_with() {
    let server = RedisServer::start();
    let scratch = Scratch::new(&[("quick.lua", QUICK), ("ticker.lua", TICKER)]);
    scratch.write(
        "late.toml",
        "id = \"late\"\ntype = \"test\"\ndescription = \"d\"\ntimeout = 3000\nagents = [\"quick\"]\n",
    );
    let url = server.url();
    let mut owner = spawn_orrery(
        scratch.path(),
        &["run", "late.toml", "--store", &url, "--json"],
        &[],
    );
    owner.wait_for("quick-1    - -> INIT", PATIENCE);
    let joiner = spawn_orrery(
        scratch.path(),
        &["run", "--join", "late", "--role", "ticker", "--store", &url],
        &[],
    );
    let owned = owner.finish(PATIENCE);
    let joined = joiner.finish(PATIENCE);
    assert_eq!(owned.code, Some(4), "owner: {}", owned.show());
    assert_eq!(joined.code, Some(4), "joiner: {}", joined.show());
    let report: Value = serde_json::from_str(&owned.stdout).expect("a JSON report");
    assert_eq!(report["status"], "timeout", "{report:#}");
    let first = report["errors"]
        .as_array()
        .and_then(|errors| errors.iter().find(|e| e["fatal"] == true))
        .unwrap_or_else(|| panic!("no fatal error: {report:#}"));
    assert_eq!(first["kind"], "timeout", "{report:#}");
    assert!(
        first["message"]
            .as_str()
            .is_some_and(|m| m.contains("task 'late'") && m.contains("exceeded 3000 ms")),
        "{report:#}"
    );
}
