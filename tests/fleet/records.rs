//! The fleet's records do not stay for ever: a finished task's record, its
//! Stream entry and (once no task left to finish uses it) its code expire
//! after `retention`; `status` stops listing it; `orrery clean ID` removes a
//! submitted task's fleet records at once, and refuses while a worker runs it.

use std::time::Instant;

use redis::Commands;

use crate::common::{Scratch, orrery, show};
use crate::util::{
    PATIENCE, QUICK, SLOW, server, status, submit, wait_running, wait_state, worker,
};

fn quick_task(scratch: &Scratch) -> &'static str {
    scratch.write(
        "quick.toml",
        "id = \"quick\"\ntype = \"test\"\ndescription = \"quick\"\ntimeout = 60000\nagents = [\"quick\"]\n",
    );
    "quick.toml"
}

fn conn(server: &crate::common::RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

#[test]
fn a_finished_task_expires_with_its_entry_and_its_code_once_unused() {
    let server = server();
    let scratch = Scratch::new(&[("quick.lua", QUICK)]);
    // Every command of the test runs in the scratch dir and reads this.
    scratch.write("orrery.toml", "retention = 3\n");
    let id = submit(scratch.path(), &server, quick_task(&scratch));
    let w = worker(scratch.path(), &server, 1);
    let task = wait_state(scratch.path(), &server, &id, "finished");
    assert_eq!(task["status"], "complete", "{task:#}");
    let w = w.interrupt(PATIENCE);
    assert_eq!(w.code, Some(0), "{}", w.show());
    let mut c = conn(&server);
    let bundle = format!("fleet:bundle:{}", task["bundle"].as_str().unwrap());
    for key in [format!("fleet:task:{id}"), bundle.clone()] {
        let ttl: i64 = c.pttl(&key).unwrap();
        assert!(ttl > 0 && ttl <= 3000, "{key} expires in {ttl} ms");
    }
    let entries: usize = c.xlen("fleet:submitted").unwrap();
    assert_eq!(entries, 0, "the finished task's entry is deleted");
    let claimed: bool = c.exists(format!("fleet:claim:{id}")).unwrap();
    assert!(!claimed);

    // The same code submitted again is kept while that task waits.
    let queued = submit(scratch.path(), &server, "quick.toml");
    let ttl: i64 = c.pttl(&bundle).unwrap();
    assert_eq!(ttl, -1, "the code of a queued task does not expire");

    // The finished one leaves `status` once its record expired.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let listed = status(scratch.path(), &server, false);
        let ids: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        if !ids.contains(&id.as_str()) {
            assert_eq!(ids, [queued.as_str()]);
            break;
        }
        assert!(Instant::now() < deadline, "{id} still listed: {listed:#}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let kept: Vec<String> = c.zrange("fleet:tasks", 0, -1).unwrap();
    assert_eq!(kept, [queued]);
}

#[test]
fn clean_removes_a_submitted_task_and_refuses_one_a_worker_runs() {
    let server = server();
    let scratch = Scratch::new(&[("quick.lua", QUICK), ("slow.lua", SLOW)]);
    let queued = submit(scratch.path(), &server, quick_task(&scratch));
    let url = server.url();
    let bundle = {
        let mut c = conn(&server);
        let hash: String = c.hget(format!("fleet:task:{queued}"), "bundle").unwrap();
        format!("fleet:bundle:{hash}")
    };
    let out = orrery(scratch.path(), &["clean", &queued, "--store", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("removed"),
        "{}",
        show(&out)
    );
    let out = orrery(scratch.path(), &["status", &queued, "--store", &url]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let mut c = conn(&server);
    let entries: usize = c.xlen("fleet:submitted").unwrap();
    assert_eq!(entries, 0, "the cleaned task's entry is deleted");
    // Its code too, which nothing else uses: it had no expiry, and nothing
    // would ever have given it one.
    let kept: bool = c.exists(&bundle).unwrap();
    assert!(!kept, "{bundle} is left behind");

    scratch.write(
        "slow.toml",
        "id = \"slow\"\ntype = \"test\"\ndescription = \"sleeps\"\ntimeout = 60000\nagents = [\"slow\"]\n[inputs]\nms = 1500\n",
    );
    let running = submit(scratch.path(), &server, "slow.toml");
    let w = worker(scratch.path(), &server, 1);
    wait_running(scratch.path(), &server, w.pid());
    let out = orrery(scratch.path(), &["clean", &running, "--store", &url]);
    assert_eq!(out.status.code(), Some(5), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is running on worker"),
        "{}",
        show(&out)
    );
    let task = wait_state(scratch.path(), &server, &running, "finished");
    assert_eq!(task["status"], "complete", "{task:#}");
    let w = w.interrupt(PATIENCE);
    assert_eq!(w.code, Some(0), "{}", w.show());
}

/// Fails at its third line.
const BROKEN: &str =
    "local M = {}\nfunction M.start(self)\n  error(\"the disk is full\")\nend\nreturn M\n";

#[test]
fn a_failed_task_s_status_says_why_naming_the_script_line() {
    let server = server();
    let scratch = Scratch::new(&[("broken.lua", BROKEN)]);
    scratch.write(
        "broken.toml",
        "id = \"broken\"\ntype = \"test\"\ndescription = \"fails\"\ntimeout = 60000\nagents = [\"broken\"]\n",
    );
    let w = worker(scratch.path(), &server, 1);
    let id = submit(scratch.path(), &server, "broken.toml");
    let task = wait_state(scratch.path(), &server, &id, "finished");
    assert_eq!(task["status"], "failed", "{task:#}");
    assert_eq!(task["exit_code"], 3, "{task:#}");
    let error = task["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("broken-1: ")
            && error.contains("broken.lua:3")
            && error.contains("the disk is full"),
        "{task:#}"
    );
    // The table names it too, under the task's line.
    let out = orrery(scratch.path(), &["status", &id, "--store", &server.url()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("the disk is full"), "{}", show(&out));
    let w = w.interrupt(PATIENCE);
    assert_eq!(w.code, Some(0), "{}", w.show());
}

/// A submission no worker has started yet is followed and shown, not
/// refused as unknown with advice to `orrery run` it: `tail` waits for its
/// start and follows it to its end; `inspect` says it is queued.
#[test]
fn tail_and_inspect_of_a_queued_submission_wait_for_it_and_show_it() {
    let server = server();
    let scratch = Scratch::new(&[("quick.lua", QUICK)]);
    let id = submit(scratch.path(), &server, quick_task(&scratch));
    let out = orrery(scratch.path(), &["inspect", &id, "--store", &server.url()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("task {id}: submitted, queued")),
        "{text}"
    );

    let mut tail = crate::common::spawn_orrery(
        scratch.path(),
        &["tail", &id, "--store", &server.url()],
        &[],
    );
    tail.wait_for("is queued: waiting for a worker to start it", PATIENCE);
    let w = worker(scratch.path(), &server, 1);
    let followed = tail.finish(PATIENCE);
    assert_eq!(followed.code, Some(0), "{}", followed.show());
    let w = w.interrupt(PATIENCE);
    assert_eq!(w.code, Some(0), "{}", w.show());
}
