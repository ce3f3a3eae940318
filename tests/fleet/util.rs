//! Helpers of the fleet tests: a server, workers with short leases, status.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{RedisServer, Running, orrery, show, spawn_orrery};

/// Long enough for a debug build on a busy machine; never reached when it works.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Short heartbeats and leases, so a dead worker is replaced within seconds.
pub const ENV: &[(&str, &str)] = &[("ORRERY_HEARTBEAT_INTERVAL", "200")];

/// Sleeps the task's `ms`, then records it: a task that is still running
/// when a worker is killed.
pub const SLOW: &str = r#"
local M = {}
function M.start(self)
  sleep(task.inputs.ms)
  task.output("slept", task.inputs.ms)
  agent.finish()
end
return M
"#;

/// A role that records an output and ends.
pub const QUICK: &str = r#"
local M = {}
function M.start(self)
  task.output("done", true)
  agent.finish()
end
return M
"#;

/// A server keeping nothing on disk.
pub fn server() -> RedisServer {
    RedisServer::start_with(
        "--port",
        &["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        |_| {},
    )
}

/// Starts a worker on `server` running up to `max` tasks, with a 1.5 s lease
/// and a 20 s drain.
pub fn worker(dir: &Path, server: &RedisServer, max: usize) -> Running {
    worker_draining(dir, server, max, 20_000)
}

/// [`worker`] with a drain of `drain_ms`.
pub fn worker_draining(dir: &Path, server: &RedisServer, max: usize, drain_ms: u64) -> Running {
    let (max, drain) = (max.to_string(), drain_ms.to_string());
    worker_with(dir, server, &["--max-tasks", &max, "--drain", &drain])
}

/// A worker of the tests (a short lease, the scratch dir's script cache)
/// with `extra` flags, once it serves.
pub fn worker_with(dir: &Path, server: &RedisServer, extra: &[&str]) -> Running {
    let mut w = spawn_worker(dir, server, extra);
    w.wait_for("serving", PATIENCE);
    w
}

/// [`worker_with`], without waiting for it to serve.
pub fn spawn_worker(dir: &Path, server: &RedisServer, extra: &[&str]) -> Running {
    let cache = dir.join("cache");
    let url = server.url();
    let mut args = vec![
        "worker",
        "--store",
        &url,
        "--lease",
        "1500",
        "--cache",
        cache.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    spawn_orrery(dir, &args, ENV)
}

/// `orrery status --json` (every task, or the workers with `workers`).
pub fn status(dir: &Path, server: &RedisServer, workers: bool) -> Value {
    let url = server.url();
    let mut args = vec!["status", "--json", "--store", &url];
    if workers {
        args.push("--workers");
    }
    let out = orrery(dir, &args);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
}

/// Polls `status --workers` until the worker of process `pid` runs a task.
pub fn wait_running(dir: &Path, server: &RedisServer, pid: u32) {
    let deadline = Instant::now() + PATIENCE;
    let suffix = format!(":{pid}");
    loop {
        let workers = status(dir, server, true);
        let busy = workers.as_array().unwrap().iter().any(|w| {
            w["id"].as_str().unwrap().ends_with(&suffix) && w["running"].as_u64().unwrap() > 0
        });
        if busy {
            return;
        }
        assert!(Instant::now() < deadline, "worker {pid} never ran a task");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Submits `file` (relative to `dir`) and returns its id.
pub fn submit(dir: &Path, server: &RedisServer, file: &str) -> String {
    let out = orrery(dir, &["submit", file, "--store", &server.url()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `orrery status ID --json`, polled until its state is `state`.
pub fn wait_state(dir: &Path, server: &RedisServer, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = orrery(dir, &["status", id, "--json", "--store", &server.url()]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let task: Value = serde_json::from_slice(&out.stdout).unwrap();
        if task["state"] == state {
            return task;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} never {state}: {task:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
