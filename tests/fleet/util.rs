//! Helpers of the fleet tests: a server, workers with short leases, status.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{RedisServer, Running, orrery, show, spawn_orrery};

/// Long enough for a debug build on a busy machine; never reached when it works.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Short heartbeats and leases, so a dead worker is replaced within seconds.
pub const ENV: &[(&str, &str)] = &[("ORRERY_HEARTBEAT_INTERVAL", "200")];

/// A server keeping nothing on disk.
pub fn server() -> RedisServer {
    RedisServer::start_with(
        "--port",
        &["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        |_| {},
    )
}

/// Starts a worker on `server` running up to `max` tasks, with a 1.5 s lease.
pub fn worker(dir: &Path, server: &RedisServer, max: usize) -> Running {
    let max = max.to_string();
    let cache = dir.join("cache");
    let mut w = spawn_orrery(
        dir,
        &[
            "worker",
            "--store",
            &server.url(),
            "--max-tasks",
            &max,
            "--lease",
            "1500",
            "--drain",
            "20000",
            "--cache",
            cache.to_str().unwrap(),
        ],
        ENV,
    );
    w.wait_for("serving", PATIENCE);
    w
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
