//! A drained worker lets its tasks run for `--drain`, then hands those
//! still running over at their callbacks' boundaries (the callbacks
//! finish); one still in a callback a third of a lease later is cut off;
//! either way another worker finishes the task. A running task is cancelled by its
//! worker.

use std::process::Command;

use crate::common::Scratch;
use crate::util::{
    PATIENCE, SLOW, server, submit, wait_running, wait_state, worker, worker_draining,
};

/// Sends `n` jobs to the handler, then ends.
const PRODUCER: &str = r#"
local M = {}
function M.start(self)
  for i = 1, task.inputs.n do bus.send("handler", "job", { n = i }) end
  agent.finish()
end
return M
"#;

/// Handles a job in `ms`, writing its start and its end to the blackboard's
/// `log` around the wait; after the `n`th job, records the log.
const HANDLER: &str = r#"
local M = {}
local function append(entry)
  blackboard.update("log", function(l)
    l = l or {}
    l[#l + 1] = entry
    return l
  end)
end
function M.on_message(self, msg)
  local n = msg.payload.n
  append("s" .. n)
  log.info("job " .. n .. " started")
  sleep(task.inputs.ms)
  append("e" .. n)
  local done = blackboard.update("done", function(c) return (c or 0) + 1 end)
  if done == task.inputs.n then
    task.output("log", blackboard.get("log"))
    agent.finish()
  end
end
return M
"#;

#[test]
fn a_drain_lets_every_callback_finish_and_the_task_completes_once_elsewhere() {
    let server = server();
    let scratch = Scratch::new(&[("producer.lua", PRODUCER), ("handler.lua", HANDLER)]);
    scratch.write(
        "jobs.toml",
        "id = \"jobs\"\ntype = \"test\"\ndescription = \"jobs\"\ntimeout = 60000\nagents = [\"producer\", \"handler\"]\n[inputs]\nn = 20\nms = 100\n",
    );
    let id = submit(scratch.path(), &server, "jobs.toml");
    // The task (2 s of jobs) outlasts the drain (300 ms): handed over.
    let mut first = worker_draining(scratch.path(), &server, 1, 300);
    let first_pid = first.pid();
    // Mid-way: a job is being handled when the drain starts.
    first.wait_for("job 3 started", PATIENCE);
    let term = Command::new("kill")
        .args(["-TERM", &first_pid.to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let first = first.finish(PATIENCE);
    assert_eq!(first.code, Some(0), "{}", first.show());
    assert!(first.stderr.contains("1 handed over"), "{}", first.show());
    assert!(!first.stderr.contains("cut off"), "{}", first.show());
    let second = worker(scratch.path(), &server, 1);
    let task = wait_state(scratch.path(), &server, &id, "finished");
    assert_eq!(task["status"], "complete", "{task:#}");
    assert_eq!(task["ends"], 1, "{task:#}");
    assert_eq!(task["workers"].as_array().unwrap().len(), 2, "{task:#}");
    // Every start has its end, right after it (one handler, one callback at
    // a time), and every job was handled once: none cut off, none repeated.
    let log: Vec<String> = task["outputs"]["log"]
        .as_array()
        .unwrap_or_else(|| panic!("no log: {task:#}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (1..=20)
        .flat_map(|n| [format!("s{n}"), format!("e{n}")])
        .collect();
    let mut pairs: Vec<String> = log.clone();
    pairs.sort_by_key(|e| (e[1..].parse::<u32>().unwrap(), e.starts_with('e')));
    assert_eq!(pairs, expected, "{log:?}");
    for pair in log.chunks(2) {
        assert_eq!(pair[0][1..], pair[1][1..], "{log:?}");
        assert!(
            pair[0].starts_with('s') && pair[1].starts_with('e'),
            "{log:?}"
        );
    }
    let second = second.interrupt(PATIENCE);
    assert_eq!(second.code, Some(0), "{}", second.show());
    // It left cleanly: the taker had no process to fence.
    assert!(!second.stderr.contains("fencing"), "{}", second.show());
}

fn slow_task(scratch: &Scratch, ms: u64) -> &'static str {
    scratch.write(
        "slow.toml",
        &format!(
            "id = \"slow\"\ntype = \"test\"\ndescription = \"sleeps\"\ntimeout = 60000\nagents = [\"slow\"]\n[inputs]\nms = {ms}\n"
        ),
    );
    "slow.toml"
}

#[test]
fn a_task_still_running_after_the_drain_is_handed_over_and_finished_elsewhere() {
    let server = server();
    let scratch = Scratch::new(&[("slow.lua", SLOW)]);
    let id = submit(scratch.path(), &server, slow_task(&scratch, 2500));
    let first = worker_draining(scratch.path(), &server, 1, 300);
    wait_running(scratch.path(), &server, first.pid());
    let first_pid = first.pid();
    let term = Command::new("kill")
        .args(["-TERM", &first_pid.to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let first = first.finish(PATIENCE);
    assert_eq!(first.code, Some(0), "{}", first.show());
    assert!(first.stderr.contains("1 handed over"), "{}", first.show());
    let second = worker(scratch.path(), &server, 1);
    let task = wait_state(scratch.path(), &server, &id, "finished");
    assert_eq!(task["status"], "complete", "{task:#}");
    assert_eq!(task["outputs"]["slept"], 2500, "{task:#}");
    assert_eq!(task["ends"], 1, "{task:#}");
    let workers = task["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{task:#}");
    assert!(
        workers[0]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{first_pid}")),
        "{task:#}"
    );
    assert!(
        workers[1]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", second.pid())),
        "{task:#}"
    );
    let second = second.interrupt(PATIENCE);
    assert_eq!(second.code, Some(0), "{}", second.show());
}

#[test]
fn a_running_task_is_cancelled_by_its_worker() {
    let server = server();
    let scratch = Scratch::new(&[("slow.lua", SLOW)]);
    let id = submit(scratch.path(), &server, slow_task(&scratch, 1500));
    let w = worker(scratch.path(), &server, 1);
    wait_running(scratch.path(), &server, w.pid());
    let out = crate::common::orrery(scratch.path(), &["cancel", &id, "--store", &server.url()]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::common::show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("its worker stops it"));
    let task = wait_state(scratch.path(), &server, &id, "cancelled");
    assert_eq!(task["status"], "interrupted", "{task:#}");
    assert_eq!(task["ends"], 1, "{task:#}");
    let w = w.interrupt(PATIENCE);
    assert_eq!(w.code, Some(0), "{}", w.show());
}
