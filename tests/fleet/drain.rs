//! A drained worker hands over the task it still runs after `--drain`, and
//! another worker finishes it; a running task is cancelled by its worker.

use std::process::Command;

use crate::common::Scratch;
use crate::util::{
    PATIENCE, SLOW, server, submit, wait_running, wait_state, worker, worker_draining,
};

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
