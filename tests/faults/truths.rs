//! Small truths: the server's own reason when it refuses, `interrupted`
//! stored as such, and every key of an ended task expiring.

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::common::{Scratch, orrery_env, repo, show, spawn_orrery};
use crate::util::{PATIENCE, inspect, raw, server_with, task_file};

/// A server at `maxclients` writes its reason and closes; the host reports
/// that reason (exit 5), not the "connection reset" the client library sees.
#[test]
fn a_full_server_is_reported_with_its_own_reason() {
    let server = server_with(&["--maxclients", "1"]);
    // The one client the server takes, proven accepted by an answer.
    let mut holder = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    holder.write_all(b"PING\r\n").unwrap();
    let mut pong = [0u8; 7];
    holder.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n");

    let out = orrery_env(
        &repo(),
        &["run", "examples/deploy.toml", "--store", &server.url()],
        &[("ORRERY_CONNECT_TIMEOUT", "700")],
    );
    assert_eq!(out.status.code(), Some(5), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ERR max number of clients reached"),
        "{}",
        show(&out)
    );
    drop(holder);
}

const HOARDER: &str = r#"
local M = {}
function M.start(self)
  local big = string.rep("x", 100000)
  for i = 1, 200 do blackboard.set("k" .. i, big) end
end
return M
"#;

/// A server out of memory refuses writes with `OOM`: the agent's call fails
/// with the server's words, and the run with exit 5.
#[test]
fn a_server_out_of_memory_is_reported_with_its_own_reason() {
    let server = server_with(&["--maxmemory", "2mb"]);
    let scratch = Scratch::new(&[("hoarder.lua", HOARDER)]);
    let file = task_file(&scratch, "oom", &["hoarder"]);
    let out = orrery_env(
        scratch.path(),
        &["run", &file, "--store", &server.url()],
        &[],
    );
    assert_eq!(out.status.code(), Some(5), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("OOM") && stdout.contains("maxmemory"),
        "{}",
        show(&out)
    );
}

/// A write the server refused is not counted as one: the report's
/// blackboard writes are the keys the server holds (it used to count all
/// 200 the agent tried). The journal lists each write as it was sent and
/// each refused one again as failed, so its writes less its failures are
/// the report's (it used to list the refused ones as writes only).
#[test]
fn writes_a_full_server_refused_are_not_counted_as_writes() {
    let server = server_with(&["--maxmemory", "2mb"]);
    let scratch = Scratch::new(&[("hoarder.lua", HOARDER)]);
    let file = task_file(&scratch, "refused", &["hoarder"]);
    let journal = scratch.path().join("run.jsonl");
    let out = orrery_env(
        scratch.path(),
        &[
            "run",
            &file,
            "--store",
            &server.url(),
            "--json",
            "--journal",
            journal.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(5), "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut conn = raw(&server);
    let stored: Vec<String> = redis::cmd("KEYS")
        .arg("task:refused:blackboard:k*")
        .query(&mut conn)
        .unwrap();
    assert!(!stored.is_empty() && stored.len() < 200, "{stored:?}");
    assert_eq!(
        report["metrics"]["blackboard_writes"],
        serde_json::json!(stored.len()),
        "{}",
        show(&out)
    );
    let lines = std::fs::read_to_string(&journal).unwrap();
    let count = |kind: &str| {
        lines
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["kind"] == kind && e["key"].as_str().is_some_and(|k| k.starts_with('k')))
            .count()
    };
    let (written, failed) = (count("blackboard_write"), count("blackboard_write_failed"));
    assert!(failed > 0, "{lines}");
    assert_eq!(
        written - failed,
        stored.len(),
        "{written} written, {failed} failed: {lines}"
    );
    assert!(
        lines.contains("OOM"),
        "the failures carry the server's reason: {lines}"
    );
}

const TICKER: &str = r#"
local M = {}
function M.start(self)
  log.info("ticking")
  for i = 1, 100000 do
    blackboard.set("tick", i)
    sleep(20)
  end
end
return M
"#;

/// Ctrl-C ends the run `interrupted` (exit 130), and the store says so too.
#[test]
fn an_interrupted_run_is_stored_as_interrupted() {
    let server = server_with(&[]);
    let scratch = Scratch::new(&[("ticker.lua", TICKER)]);
    let file = task_file(&scratch, "cut", &["ticker"]);
    let mut run = spawn_orrery(
        scratch.path(),
        &["run", &file, "--store", &server.url()],
        &[],
    );
    run.wait_for("ticking", PATIENCE);
    let done = run.interrupt(PATIENCE);
    assert_eq!(done.code, Some(130), "{}", done.show());
    let state = inspect(&scratch, &server, "cut");
    assert_eq!(state["task"]["status"], "interrupted", "{state:#}");
}

/// SIGTERM (what `systemctl stop`, `docker stop` and Kubernetes send) ends
/// the run as Ctrl-C does: the report, exit 130, the task stored as
/// interrupted, and the journal's `run_ended` written. It used to kill the
/// process at once, leaving the task `running` with no expiry.
#[test]
fn a_terminated_run_is_stored_as_interrupted() {
    let server = server_with(&[]);
    let scratch = Scratch::new(&[("ticker.lua", TICKER)]);
    let file = task_file(&scratch, "term", &["ticker"]);
    let journal = scratch.path().join("journal.jsonl");
    let mut run = spawn_orrery(
        scratch.path(),
        &[
            "run",
            &file,
            "--store",
            &server.url(),
            "--journal",
            journal.to_str().unwrap(),
        ],
        &[],
    );
    run.wait_for("ticking", PATIENCE);
    run.signal("TERM");
    let done = run.finish(PATIENCE);
    assert_eq!(done.code, Some(130), "{}", done.show());
    assert!(done.stderr.contains("stopping"), "{}", done.show());
    let state = inspect(&scratch, &server, "term");
    assert_eq!(state["task"]["status"], "interrupted", "{state:#}");
    let text = std::fs::read_to_string(&journal).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["kind"], "run_ended", "{text}");
    assert_eq!(last["status"], "interrupted", "{text}");
}

const WRITER: &str = r#"
local M = {}
function M.start(self)
  blackboard.set("kept", 1)
  bus.send(agent.id, "note", {})
  lock.with("l", function() blackboard.set("locked", true) end)
  metrics.incr("things", 1)
end
function M.on_message(self, msg) agent.finish() end
return M
"#;

/// Every key an ended task left (records, queues, hosts, metrics, journal,
/// fences...) expires after `retention`; a key that expires sooner (the
/// blackboard's, under `blackboard_ttl`) keeps its own.
#[test]
fn every_key_of_an_ended_task_expires_after_the_retention() {
    let server = server_with(&[]);
    let scratch = Scratch::new(&[("writer.lua", WRITER)]);
    let file = task_file(&scratch, "kept", &["writer"]);
    let out = orrery_env(
        scratch.path(),
        &["run", &file, "--store", &server.url()],
        &[("ORRERY_RETENTION", "600"), ("ORRERY_BLACKBOARD_TTL", "60")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let mut conn = raw(&server);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("task:kept:*")
        .query(&mut conn)
        .unwrap();
    for family in ["meta", "hosts", "agents", "metrics", "journal", "bbindex"] {
        assert!(
            keys.contains(&format!("task:kept:{family}")),
            "the run leaves task:kept:{family}: {keys:?}"
        );
    }
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut conn).unwrap();
        let bound = if key.starts_with("task:kept:blackboard:") {
            60_000
        } else {
            600_000
        };
        assert!(
            ttl > 0 && ttl <= bound,
            "{key} expires in {ttl} ms, not within {bound}"
        );
    }
    // Still readable until then.
    let state = inspect(&scratch, &server, "kept");
    assert_eq!(state["task"]["status"], "complete", "{state:#}");
}

const MANY_KEYS: &str = r#"
local M = {}
function M.start(self)
  for i = 1, 40 do blackboard.set("k" .. i, {i = i}) end
end
return M
"#;

/// The end of a run sets each key's expiry once: the pass over every key,
/// then the journal stream alone (its last lines land after that pass).
/// Two passes over the keyspace doubled the server's work at the end of a
/// task (a `SCAN` of the whole keyspace and a `PTTL` per key).
#[test]
fn the_end_of_a_run_sets_each_keys_expiry_once() {
    let server = server_with(&[]);
    let scratch = Scratch::new(&[("many.lua", MANY_KEYS)]);
    let file = task_file(&scratch, "once", &["many"]);
    let mut conn = raw(&server);
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut conn)
        .unwrap();
    let out = orrery_env(
        scratch.path(),
        &["run", &file, "--store", &server.url()],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .unwrap();
    let calls = |command: &str| -> usize {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    };
    // One `PEXPIRE ... LT` per key of the pass (with `PTTL` before each on a
    // server without the option), one for the journal, and the index's
    // occasional look while the keys were set.
    let looks = calls("pttl").max(calls("pexpire"));
    assert!(
        looks <= keys.len() + 4,
        "{looks} PTTL/PEXPIRE calls for {} keys:\n{stats}",
        keys.len()
    );
}
