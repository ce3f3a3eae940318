//! A worker's limits: live agents across its tasks, resident memory.

use crate::common::Scratch;
use crate::util::{PATIENCE, SLOW, server, submit, wait_state, worker, worker_with};

fn slow_task(scratch: &Scratch) -> &'static str {
    scratch.write(
        "slow.toml",
        "id = \"slow\"\ntype = \"test\"\ndescription = \"sleeps\"\ntimeout = 60000\nagents = [\"slow\"]\n[inputs]\nms = 600\n",
    );
    "slow.toml"
}

#[test]
fn a_worker_at_its_agent_limit_takes_no_more_tasks() {
    let server = server();
    let scratch = Scratch::new(&[("slow.lua", SLOW)]);
    let a = submit(scratch.path(), &server, slow_task(&scratch));
    let b = submit(scratch.path(), &server, "slow.toml");
    let w = worker_with(
        scratch.path(),
        &server,
        &["--max-tasks", "4", "--max-agents-total", "1"],
    );
    let a = wait_state(scratch.path(), &server, &a, "finished");
    let b = wait_state(scratch.path(), &server, &b, "finished");
    let (first, second) = if a["started_ms"].as_u64() < b["started_ms"].as_u64() {
        (a, b)
    } else {
        (b, a)
    };
    assert!(
        second["started_ms"].as_u64().unwrap() >= first["finished_ms"].as_u64().unwrap(),
        "two tasks of one agent each ran at once under --max-agents-total 1: {first:#} {second:#}"
    );
    let w = w.interrupt(PATIENCE);
    assert_eq!(w.code, Some(0), "{}", w.show());
}

#[test]
fn a_worker_over_its_memory_limit_takes_no_task() {
    let server = server();
    let scratch = Scratch::new(&[("slow.lua", SLOW)]);
    let id = submit(scratch.path(), &server, slow_task(&scratch));
    let full = worker_with(scratch.path(), &server, &["--max-memory", "1"]);
    std::thread::sleep(std::time::Duration::from_millis(800));
    wait_state(scratch.path(), &server, &id, "queued");
    let other = worker(scratch.path(), &server, 1);
    let task = wait_state(scratch.path(), &server, &id, "finished");
    assert!(
        task["worker"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", other.pid())),
        "{task:#}"
    );
    for w in [full, other] {
        let end = w.interrupt(PATIENCE);
        assert_eq!(end.code, Some(0), "{}", end.show());
    }
}

#[test]
fn a_task_goes_to_a_worker_serving_its_roles() {
    let server = server();
    let scratch = Scratch::new(&[("slow.lua", SLOW)]);
    let id = submit(scratch.path(), &server, slow_task(&scratch));
    let other = worker_with(scratch.path(), &server, &["--roles", "alpha,beta"]);
    let serving = worker_with(scratch.path(), &server, &["--roles", "slow"]);
    let task = wait_state(scratch.path(), &server, &id, "finished");
    assert_eq!(task["status"], "complete", "{task:#}");
    let workers = task["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{task:#}");
    assert!(
        workers[0]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", serving.pid())),
        "{task:#}"
    );
    for w in [other, serving] {
        let end = w.interrupt(PATIENCE);
        assert_eq!(end.code, Some(0), "{}", end.show());
    }
}
