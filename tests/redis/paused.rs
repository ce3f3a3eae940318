//! A paused server (SIGSTOP: its connections stay open, nothing is
//! answered — a hung machine, a network that drops packets): every wait of
//! the run on it ends within `connect_timeout`, the run ends with a
//! Coordination error (exit 5) naming the server, and a write that raised
//! is refused when the server wakes, never applied after the error.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Finished, RedisServer, Scratch, spawn_orrery};
use crate::multiprocess::{PATIENCE, inspect, task_file};

/// Far beyond the few `connect_timeout`s (1 s here) a run takes to end on
/// a paused server, and far below the task's timeout (120 s) and a receive's
/// wait (60 s): not a performance figure, the bound is what keeps it from
/// hanging.
const ENDS_WITHIN: Duration = Duration::from_secs(15);

/// Stops (`-STOP`) or resumes (`-CONT`) the server's process.
fn signal(server: &RedisServer, name: &str) {
    let pid = server.pid().expect("the server runs").to_string();
    let sent = std::process::Command::new("kill")
        .args([name, &pid])
        .status()
        .expect("the kill command runs");
    assert!(sent.success(), "kill {name} {pid}");
}

/// Runs `script` (role `role`) with `connect_timeout` 1 s, pauses the server
/// once the script logged `ready` and waits for the run's end; the server is
/// resumed after. The run's end and how long after the pause it came.
fn run_paused(role: &str, script: &str) -> (Finished, Duration, String) {
    let server = RedisServer::start();
    let scratch = Scratch::new(&[(&format!("{role}.lua"), script)]);
    let file = task_file(&scratch, "paused", &[role]);
    let url = server.url();
    let mut run = spawn_orrery(
        scratch.path(),
        &["run", &file, "--store", &url],
        &[("ORRERY_CONNECT_TIMEOUT", "1000")],
    );
    run.wait_for("ready", PATIENCE);
    std::thread::sleep(Duration::from_millis(300));
    signal(&server, "-STOP");
    let started = Instant::now();
    let done = run.finish(Duration::from_secs(60));
    let took = started.elapsed();
    signal(&server, "-CONT");
    (done, took, url)
}

/// The run ended as on a server gone for good: exit 5, the server named,
/// within [`ENDS_WITHIN`].
fn assert_ended_unreachable(done: &Finished, took: Duration, url: &str) {
    assert_eq!(done.code, Some(5), "{}", done.show());
    assert!(
        done.stderr.contains(&format!("store {url} unreachable")),
        "{}",
        done.show()
    );
    assert!(
        done.stderr.contains("setting connect_timeout"),
        "{}",
        done.show()
    );
    assert!(took < ENDS_WITHIN, "took {took:?}: {}", done.show());
}

const TICKER: &str = r#"
local M = {}
function M.start(self)
  log.info("ready")
  every(50, "tick")
end
function M.tick(self) blackboard.set("ticked", now()) end
return M
"#;

/// Writes sent without waiting: the agent settling them gets no answer;
/// the run ends within a few `connect_timeout`s, as when the server is
/// gone, instead of after the task's timeout or later.
#[test]
fn a_paused_server_ends_the_run_within_its_patience() {
    let (done, took, url) = run_paused("ticker", TICKER);
    assert_ended_unreachable(&done, took, &url);
}

const GETTER: &str = r#"
local M = {}
function M.start(self)
  log.info("ready")
  every(50, "tick")
end
function M.tick(self) blackboard.get("written-by-nobody") end
return M
"#;

/// A read sent without waiting (a blackboard get of a key the agent did
/// not write, so asked of the server).
#[test]
fn a_paused_server_fails_a_blackboard_get_within_its_patience() {
    let (done, took, url) = run_paused("getter", GETTER);
    assert_ended_unreachable(&done, took, &url);
}

const RECEIVER: &str = r#"
local M = {}
function M.start(self)
  log.info("ready")
  local msg = bus.receive(60000)
  log.info("received " .. tostring(msg))
end
return M
"#;

/// An agent waiting in `bus.receive` (the process's blocking reader in
/// `XREAD BLOCK`, the agent's looks at its queues).
#[test]
fn a_paused_server_fails_a_waiting_receive_within_its_patience() {
    let (done, took, url) = run_paused("receiver", RECEIVER);
    assert_ended_unreachable(&done, took, &url);
    assert!(!done.stderr.contains("received"), "{}", done.show());
}

/// A server paused before the run starts: the connection is accepted (by
/// the kernel) and nothing answers.
#[test]
fn a_server_paused_before_the_run_fails_it_within_its_patience() {
    let server = RedisServer::start();
    let scratch = Scratch::new(&[("ticker.lua", TICKER)]);
    let file = task_file(&scratch, "paused", &["ticker"]);
    let url = server.url();
    signal(&server, "-STOP");
    let started = Instant::now();
    let run = spawn_orrery(
        scratch.path(),
        &["run", &file, "--store", &url],
        &[("ORRERY_CONNECT_TIMEOUT", "1000")],
    );
    let done = run.finish(Duration::from_secs(60));
    let took = started.elapsed();
    signal(&server, "-CONT");
    assert_ended_unreachable(&done, took, &url);
}

/// The review's writer: 8,000 sets, settled by a `sleep` every 50, each
/// failure caught and ignored.
const SWALLOWER: &str = r#"
local M = {}
function M.start(self)
  log.info("ready")
  for i = 1, 8000 do
    pcall(blackboard.set, "k" .. i, i)
    if i % 50 == 0 then pcall(sleep, 20) end
  end
end
return M
"#;

/// A script that catches its writes' failures and goes on writing: once
/// the server has been lost for a whole `connect_timeout`, a write sent
/// without waiting fails at once instead of waiting out a
/// `connect_timeout` of its own on the dead connection (one per `sleep`:
/// 160 of them here), so the run still ends within a few.
#[test]
fn writes_made_long_after_the_server_was_lost_fail_at_once() {
    let (done, took, url) = run_paused("swallower", SWALLOWER);
    assert_ended_unreachable(&done, took, &url);
}

/// Sends and sets, each settled on its own (by `sleep`), so the one that
/// raised is known: `raised at send N` or `raised at set N`.
const WRITER: &str = r#"
local M = {}
function M.start(self)
  log.info("ready")
  local i, step = 0, nil
  local ok, err = pcall(function()
    while true do
      i = i + 1
      step = "send"
      bus.send(agent.id, "item", { n = i })
      sleep(10)
      step = "set"
      blackboard.set("last", i)
      sleep(10)
    end
  end)
  log.info("raised at " .. step .. " " .. i .. ": " .. tostring(err))
  error(err)
end
return M
"#;

/// The numbers of the messages waiting in the writer's own queue.
fn sunk(state: &Value) -> Vec<u64> {
    let mut sunk: Vec<u64> = state["pending"]
        .as_array()
        .expect("inspect lists the messages waiting")
        .iter()
        .filter(|m| m["queue"] == "writer-1")
        .filter_map(|m| m["envelope"]["payload"]["n"].as_u64())
        .collect();
    sunk.sort_unstable();
    sunk
}

/// A send or a set that raised because the paused server did not answer
/// in time is refused when the server wakes, though the server then runs
/// every command it held: the queue holds exactly the messages sent before
/// it, the blackboard the value set before it, and the run, which reaches
/// the server again, stores its end.
#[test]
fn a_write_that_raised_on_a_paused_server_is_not_applied_when_it_wakes() {
    let server = RedisServer::start();
    let scratch = Scratch::new(&[("writer.lua", WRITER)]);
    let file = task_file(&scratch, "late", &["writer"]);
    let url = server.url();
    let mut run = spawn_orrery(
        scratch.path(),
        &["run", &file, "--store", &url],
        &[("ORRERY_CONNECT_TIMEOUT", "1000")],
    );
    run.wait_for("ready", PATIENCE);
    std::thread::sleep(Duration::from_millis(300));
    signal(&server, "-STOP");
    let raised = run.wait_for("raised at", ENDS_WITHIN);
    // The server runs what it held while the run still goes on.
    signal(&server, "-CONT");
    let done = run.finish(PATIENCE);
    assert_eq!(done.code, Some(5), "{}", done.show());
    assert!(
        raised.contains(&format!("store {url} unreachable"))
            && raised.contains("whether it applied the write is not known")
            && raised.contains("if the write reaches it after the deadline, it is refused"),
        "{raised}"
    );
    let (step, n) = {
        let at = raised
            .split("raised at ")
            .nth(1)
            .expect("the line says where");
        let mut words = at.split([' ', ':']);
        let step = words.next().unwrap_or_default().to_string();
        let n: u64 = words
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a number in {raised:?}"));
        (step, n)
    };
    let state = inspect(&scratch, &server, "late");
    let sent_before = if step == "send" { n - 1 } else { n };
    assert_eq!(
        sunk(&state),
        (1..=sent_before).collect::<Vec<_>>(),
        "raised at {step} {n}: {state:#}"
    );
    assert_eq!(
        state["blackboard"]["last"],
        serde_json::json!(n - 1),
        "raised at {step} {n}: {state:#}"
    );
    assert_eq!(state["task"]["status"], "failed", "{state:#}");
}

/// However the run is stuck (here on a paused server with a patience of a
/// minute, which it waits for), a third Ctrl-C quits at once with exit
/// 130: the first stops the agents, the second aborts them, the third
/// leaves.
#[test]
fn a_third_interrupt_quits_a_run_that_cannot_end() {
    let server = RedisServer::start();
    let scratch = Scratch::new(&[("ticker.lua", TICKER)]);
    let file = task_file(&scratch, "stuck", &["ticker"]);
    let mut run = spawn_orrery(
        scratch.path(),
        &["run", &file, "--store", &server.url()],
        &[("ORRERY_CONNECT_TIMEOUT", "60000")],
    );
    run.wait_for("ready", PATIENCE);
    signal(&server, "-STOP");
    run.signal("INT");
    run.wait_for("stopping", PATIENCE);
    run.signal("INT");
    run.wait_for("aborting", PATIENCE);
    run.signal("INT");
    let done = run.finish(Duration::from_secs(10));
    signal(&server, "-CONT");
    assert_eq!(done.code, Some(130), "{}", done.show());
    assert!(done.stderr.contains("quitting at once"), "{}", done.show());
}

/// Watches while the server is paused, then once it is back.
const WATCHER: &str = r#"
local M = {}
local function watch()
  return pcall(blackboard.watch, "k", function(key, value)
    log.info("saw " .. key .. "=" .. tostring(value))
  end)
end
function M.start(self)
  log.info("ready")
  sleep(2000)
  log.info("first watch: " .. tostring(select(2, watch())))
  sleep(25500)
  local ok, err = watch()
  log.info("second watch: " .. tostring(ok) .. " " .. tostring(err))
  blackboard.set("k", 1)
end
return M
"#;

/// Connections to the paused server at `url` until its queue of accepted
/// connections is full (a connection is not accepted within 300 ms):
/// from then on the kernel drops a new connection's first packet, and the
/// attempt waits for its retransmissions (Linux: about 1, 2, 3, 4, 7, 11,
/// 20, 36 s after it began with `tcp_syn_linear_timeouts` = 4, measured
/// here; 1, 3, 7, 15, 31 s without).
fn fill_backlog(url: &str) -> Vec<std::net::TcpStream> {
    let port = url.rsplit(':').next().unwrap().trim_end_matches("/0");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut held = Vec::new();
    while held.len() < 16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(c) => held.push(c),
            Err(_) => return held,
        }
    }
    panic!("16 connections to the paused server {url} were accepted: its backlog is not 1");
}

/// The pub/sub connection of `blackboard.watch`, on a paused server whose
/// queue of accepted connections is full: its connection attempt waits
/// for the kernel's retransmissions, beyond the server's return. Bounded
/// by `connect_timeout` and made again, the subscription is back within
/// about a `connect_timeout` of the server's return, so a watch made then
/// sees its change; unbounded, the first attempt held the subscription
/// until its next retransmission (31 or 36 s after it began).
#[test]
fn a_watch_made_on_a_paused_server_fails_within_its_patience_and_works_once_it_is_back() {
    let args = [
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--tcp-backlog",
        "1",
    ];
    let server = RedisServer::start_with("--port", &args, |_| {});
    let scratch = Scratch::new(&[("watcher.lua", WATCHER)]);
    let file = task_file(&scratch, "watch", &["watcher"]);
    let url = server.url();
    let mut run = spawn_orrery(
        scratch.path(),
        &["run", &file, "--store", &url],
        &[("ORRERY_CONNECT_TIMEOUT", "1000")],
    );
    run.wait_for("ready", PATIENCE);
    signal(&server, "-STOP");
    let held = fill_backlog(&url);
    let first = run.wait_for("first watch", ENDS_WITHIN);
    assert!(
        first.contains(&format!("store {url} unreachable"))
            && first.contains("subscription to blackboard events")
            && first.contains("setting connect_timeout"),
        "{first}"
    );
    // Back 24 s after the first attempt began, between its
    // retransmissions (20 and 36 s, or 15 and 31 s; see `fill_backlog`);
    // the second watch comes 2.5 s later.
    std::thread::sleep(Duration::from_secs(23));
    signal(&server, "-CONT");
    drop(held);
    let second = run.wait_for("second watch", ENDS_WITHIN);
    let done = run.finish(PATIENCE);
    assert!(second.contains("second watch: true"), "{}", done.show());
    assert_eq!(done.code, Some(0), "{}", done.show());
    assert!(done.stderr.contains("saw k=1"), "{}", done.show());
}

/// Writes sent without waiting whose failure the script catches (`pcall`
/// around the `sleep` that settles them), then, once the server answers
/// again, more writes and a normal end.
const CATCHER: &str = r#"
local M = {}
function M.start(self)
  log.info("ready")
  local i = 0
  while true do
    i = i + 1
    blackboard.set("k" .. i, i)
    local ok, err = pcall(sleep, 10)
    if not ok then
      log.info("caught at " .. i .. ": " .. tostring(err))
      break
    end
  end
  while not pcall(blackboard.get, "nobody-wrote-it") do pcall(sleep, 100) end
  blackboard.set("after", i)
end
return M
"#;

/// A write the paused server never applied is lost work even when the
/// script caught its error and went on: the run, which reaches the server
/// again and reports, is `failed` with exit 5 and an entry naming how many
/// writes were lost and the first one; and the server's metric totals,
/// flushed while it was paused and again after, equal the report's.
#[test]
fn a_lost_write_the_script_caught_fails_the_run_and_metrics_are_counted_once() {
    let server = RedisServer::start();
    let scratch = Scratch::new(&[("catcher.lua", CATCHER)]);
    let file = task_file(&scratch, "caught", &["catcher"]);
    let url = server.url();
    let mut run = spawn_orrery(
        scratch.path(),
        &["run", &file, "--store", &url, "--json"],
        &[
            ("ORRERY_CONNECT_TIMEOUT", "1000"),
            // A flush is on its way whenever the server pauses.
            ("ORRERY_METRICS_INTERVAL", "50"),
        ],
    );
    run.wait_for("ready", PATIENCE);
    std::thread::sleep(Duration::from_millis(300));
    signal(&server, "-STOP");
    let caught = run.wait_for("caught at", ENDS_WITHIN);
    // Held a while longer: the flushes that gave up stay unanswered.
    std::thread::sleep(Duration::from_millis(1500));
    signal(&server, "-CONT");
    let done = run.finish(PATIENCE);
    assert_eq!(done.code, Some(5), "{caught}\n{}", done.show());
    let report: Value = serde_json::from_str(&done.stdout).expect("a JSON report");
    assert_eq!(report["status"], "failed", "{report:#}");
    let lost = report["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("not applied by the store"))
        })
        .unwrap_or_else(|| panic!("no entry for the lost writes: {report:#}"));
    assert_eq!(lost["kind"], "coordination", "{lost:#}");
    let message = lost["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the first: blackboard key 'k")
            && message.contains(&format!("store {url} unreachable")),
        "{message}"
    );
    let state = inspect(&scratch, &server, "caught");
    assert_eq!(
        state["metrics"]["blackboard_writes"], report["metrics"]["blackboard_writes"],
        "the server's total against the report's: {:#}",
        state["metrics"]
    );
}
