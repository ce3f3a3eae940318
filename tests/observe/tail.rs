//! `orrery tail` follows a task run by other processes on a real Redis:
//! started while the task runs, it prints what it missed, then what the
//! owner and a process that joins later store, and stops at the run's end.

use std::collections::BTreeSet;

use orrery::coordination::journal::Event;
use orrery::error::exit;

use crate::common::{RedisServer, Scratch, orrery, show, spawn_orrery};
use crate::util::{PATIENCE, parse_lines, read_journal};

const WAITER: &str = r#"
local M = {}
function M.start(self)
  blackboard.set("before", true)
  log.info("waiting for go")
  local m = bus.receive(100000)
  assert(m and m.type == "go", "no go")
  blackboard.set("after", m.from)
end
return M
"#;

const GOER: &str = r#"
local M = {}
function M.start(self) bus.send("waiter-1", "go", {}) end
return M
"#;

#[test]
fn tail_follows_a_task_of_two_other_processes_from_what_it_missed_to_the_end() {
    let server = RedisServer::start();
    let url = server.url();
    let scratch = Scratch::new(&[("waiter.lua", WAITER), ("goer.lua", GOER)]);
    scratch.write(
        "task.toml",
        "id = \"tailed\"\ntype = \"test\"\ndescription = \"tail\"\ntimeout = 120000\nagents = [\"waiter\"]\n",
    );
    let owner_journal = scratch.path().join("owner.jsonl");
    let joiner_journal = scratch.path().join("joiner.jsonl");
    let mut owner = spawn_orrery(
        scratch.path(),
        &[
            "run",
            "task.toml",
            "--store",
            &url,
            "--journal",
            owner_journal.to_str().unwrap(),
        ],
        &[],
    );
    owner.wait_for("waiting for go", PATIENCE);

    // Started mid-run: what was stored before comes first.
    let tail = spawn_orrery(
        scratch.path(),
        &["tail", "tailed", "--store", &url, "--json"],
        &[],
    );
    let joiner = orrery(
        scratch.path(),
        &[
            "run",
            "--join",
            "tailed",
            "--role",
            "goer",
            "--store",
            &url,
            "--journal",
            joiner_journal.to_str().unwrap(),
        ],
    );
    assert_eq!(joiner.status.code(), Some(exit::OK), "{}", show(&joiner));
    let owner = owner.finish(PATIENCE);
    assert_eq!(owner.code, Some(exit::OK), "{}", owner.show());
    let tail = tail.finish(PATIENCE);
    assert_eq!(tail.code, Some(exit::OK), "{}", tail.show());

    let tailed = parse_lines(&tail.stdout);
    let mut stored = read_journal(&owner_journal);
    stored.extend(read_journal(&joiner_journal));
    let key = |e: &orrery::coordination::journal::Entry| (e.host.clone(), e.seq);
    let tailed_keys: BTreeSet<_> = tailed.iter().map(key).collect();
    let stored_keys: BTreeSet<_> = stored.iter().map(key).collect();
    assert_eq!(tailed.len(), tailed_keys.len(), "no entry twice");
    assert_eq!(
        tailed_keys, stored_keys,
        "tail printed every entry of both processes"
    );
    let hosts: BTreeSet<_> = tailed.iter().map(|e| e.host.clone()).collect();
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    let wrote = |k: &str| {
        tailed
            .iter()
            .position(|e| matches!(&e.event, Event::BlackboardWrite { key, .. } if key == k))
    };
    let (before, after) = (wrote("before"), wrote("after"));
    assert!(
        before.is_some() && after.is_some() && before < after,
        "{before:?} {after:?}"
    );
    // Each process's entries come in their order.
    for host in &hosts {
        let seqs: Vec<u64> = tailed
            .iter()
            .filter(|e| &e.host == host)
            .map(|e| e.seq)
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{host}: {seqs:?}");
    }
}

#[test]
fn tail_of_a_task_the_store_never_saw_is_bad_input_and_the_text_form_reads_as_lines() {
    let server = RedisServer::start();
    let scratch = Scratch::new(&[("goer.lua", "return {}")]);
    let out = orrery(
        scratch.path(),
        &["tail", "nothing-here", "--store", &server.url()],
    );
    assert_eq!(out.status.code(), Some(exit::BAD_INPUT), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TASK_ID 'nothing-here'"));
    let out = orrery(scratch.path(), &["tail", "x"]);
    assert_eq!(out.status.code(), Some(exit::BAD_INPUT), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a shared store"));

    scratch.write(
        "scripts/solo.lua",
        "return { start = function() blackboard.set('k', 1) end }",
    );
    scratch.write(
        "t.toml",
        "id = \"solo\"\ntype = \"test\"\ndescription = \"d\"\ntimeout = 60000\nagents = [\"solo\"]\n",
    );
    let run = orrery(scratch.path(), &["run", "t.toml", "--store", &server.url()]);
    assert_eq!(run.status.code(), Some(exit::OK), "{}", show(&run));
    let out = orrery(scratch.path(), &["tail", "solo", "--store", &server.url()]);
    assert_eq!(out.status.code(), Some(exit::OK), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("solo-1     set k"), "{text}");
    assert!(text.contains("task solo ended complete"), "{text}");
}

/// A run whose only process was killed (SIGKILL: no end recorded) is not
/// followed for ever in silence: once none of its processes has sent a
/// heartbeat for the lost time, `tail` ends with a coordination error saying so and
/// how to take the run up. It used to follow it in silence until stopped.
#[test]
fn tail_of_a_run_whose_processes_were_killed_ends_saying_so() {
    let server = RedisServer::start();
    let url = server.url();
    let scratch = Scratch::new(&[("waiter.lua", WAITER)]);
    scratch.write(
        "task.toml",
        "id = \"killed\"\ntype = \"test\"\ndescription = \"tail\"\ntimeout = 120000\nagents = [\"waiter\"]\n",
    );
    let beat = [("ORRERY_HEARTBEAT_INTERVAL", "100")];
    let mut owner = spawn_orrery(
        scratch.path(),
        &["run", "task.toml", "--store", &url],
        &beat,
    );
    owner.wait_for("waiting for go", PATIENCE);
    // The run's interval is the one that counts: `tail` runs with its default.
    let tail = spawn_orrery(scratch.path(), &["tail", "killed", "--store", &url], &[]);
    // The journal reaches the store every 20 ms or so.
    std::thread::sleep(std::time::Duration::from_millis(500));
    owner.kill();
    let tail = tail.finish(PATIENCE);
    assert_eq!(tail.code, Some(exit::COORDINATION), "{}", tail.show());
    assert!(tail.stdout.contains("set before"), "{}", tail.show());
    assert!(
        tail.stderr
            .contains("task 'killed' is stored as running, but none of its processes")
            && tail.stderr.contains("orrery resume killed"),
        "{}",
        tail.show()
    );
}

/// A run whose owner keeps no journal stream (`journal_max_len = 0`) has
/// nothing to follow: `tail` says so (bad input, naming the setting)
/// instead of printing nothing and exiting 0.
#[test]
fn tail_of_a_run_that_keeps_no_journal_says_so() {
    let server = RedisServer::start();
    let scratch = Scratch::new(&[(
        "solo.lua",
        "return { start = function() blackboard.set('k', 1) end }",
    )]);
    scratch.write(
        "t.toml",
        "id = \"unjournaled\"\ntype = \"test\"\ndescription = \"d\"\ntimeout = 60000\nagents = [\"solo\"]\n",
    );
    let run = crate::common::orrery_env(
        scratch.path(),
        &["run", "t.toml", "--store", &server.url()],
        &[("ORRERY_JOURNAL_MAX_LEN", "0")],
    );
    assert_eq!(run.status.code(), Some(exit::OK), "{}", show(&run));
    let out = orrery(
        scratch.path(),
        &[
            "tail",
            "unjournaled",
            "--store",
            &server.url(),
            "--no-follow",
        ],
    );
    assert_eq!(out.status.code(), Some(exit::BAD_INPUT), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TASK_ID 'unjournaled'") && stderr.contains("journal_max_len = 0"),
        "{}",
        show(&out)
    );
}

/// The same for a run killed while it was stopping (after a Ctrl-C, its
/// agents finishing their callbacks): `orrery resume` takes such a run
/// up too, so `tail` must not take it for ended. It used to exit 0.
#[test]
fn tail_of_a_run_killed_while_stopping_ends_saying_so() {
    let server = RedisServer::start();
    let url = server.url();
    let scratch = Scratch::new(&[(
        "sleeper.lua",
        "return { start = function() log.info('sleeping'); sleep(100000) end }",
    )]);
    scratch.write(
        "task.toml",
        "id = \"stopk\"\ntype = \"test\"\ndescription = \"tail\"\ntimeout = 120000\nagents = [\"sleeper\"]\n",
    );
    let beat = [("ORRERY_HEARTBEAT_INTERVAL", "100")];
    let mut owner = spawn_orrery(
        scratch.path(),
        &["run", "task.toml", "--store", &url],
        &beat,
    );
    owner.wait_for("sleeping", PATIENCE);
    owner.signal("INT");
    owner.wait_for("stopping", PATIENCE);
    std::thread::sleep(std::time::Duration::from_millis(300));
    owner.kill();
    let tail = orrery(scratch.path(), &["tail", "stopk", "--store", &url]);
    assert_eq!(
        tail.status.code(),
        Some(exit::COORDINATION),
        "{}",
        show(&tail)
    );
    let stderr = String::from_utf8_lossy(&tail.stderr);
    assert!(
        stderr.contains("task 'stopk' is stored as stopping, but none of its processes"),
        "{}",
        show(&tail)
    );
}

const TICKER: &str = r#"
local M = {}
function M.start(self)
  for i = 1, 100000 do
    blackboard.set("tick", i)
    sleep(20)
  end
end
return M
"#;

/// `orrery tail ID | head -1`: once the reader of its output is gone,
/// `tail` ends (exit 0, as `run` does), instead of following the run to its
/// end with nobody reading.
#[test]
fn tail_ends_when_the_reader_of_its_output_goes_away() {
    use std::io::BufRead;
    let server = RedisServer::start();
    let url = server.url();
    let scratch = Scratch::new(&[("ticker.lua", TICKER)]);
    scratch.write(
        "task.toml",
        "id = \"ticking\"\ntype = \"test\"\ndescription = \"tail\"\ntimeout = 120000\nagents = [\"ticker\"]\n",
    );
    let mut owner = spawn_orrery(scratch.path(), &["run", "task.toml", "--store", &url], &[]);
    let mut tail =
        crate::common::orrery_command(scratch.path(), &["tail", "ticking", "--store", &url])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(tail.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty(), "tail printed nothing");
    // The reader is gone (the pipe's only read end dropped above); the run
    // goes on writing a tick every 20 ms, for longer than this waits.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = tail.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tail still runs with nobody reading it"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(exit::OK));
    // Not the run's end: its owner still runs.
    let owner_alive = std::path::Path::new(&format!("/proc/{}", owner.pid())).exists();
    owner.kill();
    assert!(owner_alive, "the run ended before tail did");
}
