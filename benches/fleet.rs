//! Tasks per second through the fleet with 1, 2 and 3 workers, and the
//! submit-to-start latency (p50/p99), on a `redis-server` this bench starts.
//! `cargo bench --bench fleet` (release build); prints the figures with the
//! machine's load.
//!
//! Each throughput round queues 60 word-count tasks first, then starts the
//! workers (`--max-tasks 4` each) and times from the first start to the last
//! end, as the workers record them. The latency round submits 40 tasks one
//! after another to one idle worker.

use std::time::{Duration, Instant};

use orrery_test_support::{RedisServer, Running, orrery, repo, show, spawn_orrery};
use serde_json::Value;

const TASKS: usize = 60;
const ROUNDS: usize = 3;

fn server() -> RedisServer {
    RedisServer::start_with(
        "--port",
        &["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        |_| {},
    )
}

fn worker(server: &RedisServer, cache: &std::path::Path) -> Running {
    let mut w = spawn_orrery(
        &repo(),
        &[
            "worker",
            "--store",
            &server.url(),
            "--max-tasks",
            "4",
            "--cache",
            cache.to_str().unwrap(),
            "-q",
        ],
        &[],
    );
    w.wait_for("serving", Duration::from_secs(60));
    w
}

fn submit(server: &RedisServer) -> String {
    let task = repo().join("examples/word-count/task.toml");
    let out = orrery(
        &repo(),
        &["submit", task.to_str().unwrap(), "--store", &server.url()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn tasks(server: &RedisServer) -> Vec<Value> {
    let out = orrery(&repo(), &["status", "--json", "--store", &server.url()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn wait_all(server: &RedisServer, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let all = tasks(server);
        if all.iter().filter(|t| t["state"] == "finished").count() == n {
            return all;
        }
        assert!(Instant::now() < deadline, "tasks did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ms(t: &Value, k: &str) -> u64 {
    t[k].as_u64().unwrap()
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn median_spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn throughput(workers: usize) -> f64 {
    let server = server();
    let cache = tempdir();
    for _ in 0..TASKS {
        submit(&server);
    }
    let running: Vec<Running> = (0..workers).map(|_| worker(&server, &cache)).collect();
    let all = wait_all(&server, TASKS);
    let first = all.iter().map(|t| ms(t, "started_ms")).min().unwrap();
    let last = all.iter().map(|t| ms(t, "finished_ms")).max().unwrap();
    for w in running {
        let end = w.interrupt(Duration::from_secs(60));
        assert_eq!(end.code, Some(0), "{}", end.show());
    }
    TASKS as f64 * 1000.0 / (last - first).max(1) as f64
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("orrery-fleet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn main() {
    println!(
        "fleet bench: {} cores, load {} at start",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load()
    );
    // `cargo test --all-targets` runs this too (without `--bench`): one
    // short round then, to show it still works without taking the suite's time.
    if !std::env::args().any(|a| a == "--bench") {
        let rate = throughput(1);
        println!("smoke run (not `cargo bench`): 1 worker, {rate:.1} tasks/s");
        return;
    }
    for workers in 1..=3 {
        let rates: Vec<f64> = (0..ROUNDS).map(|_| throughput(workers)).collect();
        let (median, low, high) = median_spread(rates);
        println!(
            "{workers} worker(s): {median:.1} tasks/s (median of {ROUNDS}; {low:.1}–{high:.1}), load {}",
            load()
        );
    }
    let server = server();
    let w = worker(&server, &tempdir());
    for _ in 0..40 {
        submit(&server);
        std::thread::sleep(Duration::from_millis(20));
    }
    let all = wait_all(&server, 40);
    let mut lat: Vec<u64> = all
        .iter()
        .map(|t| ms(t, "started_ms") - ms(t, "submitted_ms"))
        .collect();
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1];
    println!(
        "submit-to-start latency, 1 idle worker, 40 tasks: p50 {} ms, p99 {} ms (max {} ms), load {}",
        p(0.5),
        p(0.99),
        lat[lat.len() - 1],
        load()
    );
    let _ = w.interrupt(Duration::from_secs(60));
}
