//! A bundle a worker cannot write into its `--cache`: one that can never be
//! written (a file named outside its directory) fails its task as bad input
//! naming the file, so `status` shows why and `submit --wait` ends; one
//! that fails for the disk (here a name the file system refuses) is tried
//! again. Either way nothing is left in the cache.
//!
//! `submit` only makes well-formed bundles, so the tests rewrite the stored
//! one, as a store shared with something else could.

use redis::Commands;
use serde_json::json;

use crate::common::{RedisServer, Scratch, show, spawn_orrery};
use crate::util::{ENV, PATIENCE, QUICK, server, spawn_worker, status, submit, wait_state, worker};

/// A scratch dir with the `quick` role and its task file `quick.toml`.
fn scratch() -> Scratch {
    let scratch = Scratch::new(&[("quick.lua", QUICK)]);
    scratch.write(
        "quick.toml",
        "id = \"quick\"\ntype = \"test\"\ndescription = \"quick\"\ntimeout = 60000\nagents = [\"quick\"]\n",
    );
    scratch
}

/// Submits `quick.toml` (no worker runs yet) and replaces its stored
/// bundle by `quick.lua` plus `extra` (path to text); returns the task id.
/// A later submit of the same code keeps that bundle: it is stored once.
fn submit_with_bundle(scratch: &Scratch, server: &RedisServer, extra: (&str, &str)) -> String {
    let bundle = json!({
        "scripts": { "quick.lua": QUICK, extra.0: extra.1 },
        "stdlib": {},
    });
    submit_with_stored(scratch, server, &bundle.to_string())
}

/// Submits `quick.toml` and stores `text` as its bundle; returns the task id.
fn submit_with_stored(scratch: &Scratch, server: &RedisServer, text: &str) -> String {
    let id = submit(scratch.path(), server, "quick.toml");
    let task = status(scratch.path(), server, false);
    let hash = task[0]["bundle"]
        .as_str()
        .expect("a bundle hash")
        .to_string();
    let mut c = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = c.set(format!("fleet:bundle:{hash}"), text).unwrap();
    id
}

/// What the worker's `--cache` holds (as `spawn_worker` sets it).
fn cache_entries(scratch: &Scratch) -> Vec<String> {
    match std::fs::read_dir(scratch.path().join("cache")) {
        Ok(dir) => dir
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn a_bundle_naming_a_file_outside_its_directory_fails_its_task_naming_it() {
    let server = server();
    let scratch = scratch();
    let id = submit_with_bundle(&scratch, &server, ("../x.lua", "return 1"));
    let _w = worker(scratch.path(), &server, 2);
    let url = server.url();
    let waited = spawn_orrery(
        scratch.path(),
        &["submit", "quick.toml", "--store", &url, "--wait"],
        ENV,
    )
    .finish(PATIENCE);
    assert_eq!(waited.code, Some(2), "{}", waited.show());
    let task = wait_state(scratch.path(), &server, &id, "finished");
    assert_eq!(task["exit_code"], 2, "{task:#}");
    let error = task["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("names a file outside its directory: scripts/../x.lua"),
        "{task:#}"
    );
    let left = cache_entries(&scratch);
    assert!(left.is_empty(), "the cache holds {left:?}");
}

#[test]
fn a_bundle_the_disk_refuses_is_tried_again_leaving_nothing_in_the_cache() {
    let server = server();
    let scratch = scratch();
    // Longer than any file system's name: the write fails half way, as on a full disk.
    let long = format!("{}.lua", "x".repeat(300));
    let id = submit_with_bundle(&scratch, &server, (&long, "return 1"));
    let mut w = spawn_worker(scratch.path(), &server, &[]);
    for _ in 0..3 {
        w.wait_for(
            &format!("task {id} left for later: coordination: cannot write"),
            PATIENCE,
        );
    }
    let left = cache_entries(&scratch);
    assert!(left.is_empty(), "the cache holds {left:?}");
    let task = status(scratch.path(), &server, false);
    assert_eq!(task[0]["state"], "queued", "{task:#}");
    let out = crate::common::orrery(scratch.path(), &["cancel", &id, "--store", &server.url()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

#[test]
fn a_stored_bundle_that_is_not_a_bundle_fails_its_task() {
    let server = server();
    let scratch = scratch();
    let id = submit_with_stored(&scratch, &server, "{\"scripts\": 1}");
    let _w = worker(scratch.path(), &server, 1);
    let task = wait_state(scratch.path(), &server, &id, "finished");
    assert_eq!(task["exit_code"], 2, "{task:#}");
    let error = task["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("code bundle") && error.contains("unreadable"),
        "{task:#}"
    );
    assert!(cache_entries(&scratch).is_empty());
}
