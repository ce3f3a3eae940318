//! Idle workers block instead of polling: a worker serving any role, with
//! nothing to do, looks at the Streams (and at the roles asked for) only at
//! its beats; a task submitted or a join asked for wakes it at once.

use std::time::{Duration, Instant};

use crate::adopt::{CONSUMER, PRODUCER, pipeline};
use crate::common::{RedisServer, Scratch};
use crate::util::{PATIENCE, server, submit, wait_state, worker_with};

/// How often the server ran `command` so far (`INFO commandstats`).
fn calls(server: &RedisServer, command: &str) -> u64 {
    let mut c = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

#[test]
fn an_idle_worker_serving_any_role_waits_without_polling() {
    let server = server();
    let scratch = Scratch::new(&[("producer.lua", PRODUCER), ("consumer.lua", CONSUMER)]);
    // A role was asked for once, so an any-role worker reads the set of them.
    let producers = worker_with(scratch.path(), &server, &["--roles", "producer"]);
    let any = worker_with(scratch.path(), &server, &[]);
    let id = submit(scratch.path(), &server, pipeline(&scratch, 0, 0));
    let task = wait_state(scratch.path(), &server, &id, "finished");
    assert_eq!(task["status"], "complete", "{task:#}");

    let before = ["smembers", "xreadgroup", "xautoclaim"].map(|c| calls(&server, c));
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let after = ["smembers", "xreadgroup", "xautoclaim"].map(|c| calls(&server, c));
    // Two workers, each looking once per beat (a third of the 1.5 s lease)
    // and with a beat's slack; polling every 20 ms made it 100 each.
    let beats = started.elapsed().as_millis() as u64 / 500 + 2;
    for (i, command) in ["smembers", "xreadgroup", "xautoclaim"].iter().enumerate() {
        let made = after[i] - before[i];
        // XREADGROUP and XAUTOCLAIM: the task Stream and one join Stream each.
        assert!(
            made <= 2 * 2 * beats,
            "{made} {command} in {:?} from two idle workers",
            started.elapsed()
        );
    }
    for w in [producers, any] {
        let w = w.interrupt(PATIENCE);
        assert_eq!(w.code, Some(0), "{}", w.show());
    }
}
