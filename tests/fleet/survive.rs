//! Three workers share 30 tasks of three agent sets; one is SIGKILLed and
//! one SIGTERMed mid-run. Every task ends once, complete, with the outputs
//! of an undisturbed run, and no task ran on two live workers at once.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Scratch, orrery, repo, show};
use crate::util::{PATIENCE, SLOW, server, status, wait_running, worker};

/// The task files of the three sets, by name, relative to `scratch`, with
/// the flags `submit` needs for each.
fn sets(scratch: &Scratch) -> Vec<(&'static str, String, Vec<String>)> {
    let slow = scratch.write(
        "slow.toml",
        "id = \"slow\"\ntype = \"test\"\ndescription = \"sleeps\"\ntimeout = 60000\nagents = [\"slow\"]\n[inputs]\nms = 1200\n",
    );
    let repo = repo();
    vec![
        (
            "deploy",
            repo.join("examples/deploy.toml").display().to_string(),
            vec![
                "--scripts".into(),
                repo.join("scripts").display().to_string(),
            ],
        ),
        (
            "word-count",
            repo.join("examples/word-count/task.toml")
                .display()
                .to_string(),
            Vec::new(),
        ),
        (
            "slow",
            slow.display().to_string(),
            vec!["--scripts".into(), scratch.scripts().display().to_string()],
        ),
    ]
}

/// What must match between runs: everything but how the word-count pool
/// split its documents, which depends on timing.
fn comparable(set: &str, outputs: &Value) -> Value {
    match set {
        "word-count" => outputs["total_words"].clone(),
        _ => outputs.clone(),
    }
}

/// The outputs of an undisturbed run of a set, on the embedded store.
fn reference(scratch: &Scratch, file: &str, flags: &[String]) -> Value {
    let mut args = vec!["run", file, "--json"];
    args.extend(flags.iter().map(String::as_str));
    let out = orrery(scratch.path(), &args);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report["outputs"].clone()
}

#[test]
fn thirty_tasks_survive_a_killed_and_a_drained_worker() {
    let server = server();
    let scratch = Scratch::new(&[("slow.lua", SLOW)]);
    let sets = sets(&scratch);
    let expected: BTreeMap<&str, Value> = sets
        .iter()
        .map(|(name, file, flags)| (*name, comparable(name, &reference(&scratch, file, flags))))
        .collect();

    let mut killed = worker(scratch.path(), &server, 2);
    let drained = worker(scratch.path(), &server, 2);
    let survivor = worker(scratch.path(), &server, 2);
    let (killed_id, drained_id) = (format!(":{}", killed.pid()), format!(":{}", drained.pid()));

    let url = server.url();
    let mut set_of = BTreeMap::new();
    for i in 0..30 {
        // The slow set first in every three, so each worker holds one when hit.
        let (name, file, flags) = &sets[[2, 0, 1][i % 3]];
        let mut args = vec!["submit", file.as_str(), "--store", &url];
        args.extend(flags.iter().map(String::as_str));
        let out = orrery(scratch.path(), &args);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
        set_of.insert(id, *name);
    }

    wait_running(scratch.path(), &server, killed.pid());
    std::thread::sleep(Duration::from_millis(300));
    killed.kill();
    wait_running(scratch.path(), &server, drained.pid());
    let term = Command::new("kill")
        .args(["-TERM", &drained.pid().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let drained = drained.finish(PATIENCE);
    assert_eq!(drained.code, Some(0), "{}", drained.show());
    assert!(drained.stderr.contains("draining"), "{}", drained.show());

    let deadline = Instant::now() + PATIENCE;
    let tasks = loop {
        let tasks = status(scratch.path(), &server, false);
        let done = tasks
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "finished")
            .count();
        if done == 30 {
            break tasks;
        }
        assert!(
            Instant::now() < deadline,
            "not every task finished: {tasks:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    let mut taken_over = 0;
    for t in tasks.as_array().unwrap() {
        let id = t["id"].as_str().unwrap();
        let set = set_of[id];
        assert_eq!(t["status"], "complete", "{t:#}");
        assert_eq!(t["exit_code"], 0, "{t:#}");
        assert_eq!(t["ends"], 1, "task {id} ended more than once: {t:#}");
        assert_eq!(
            comparable(set, &t["outputs"]),
            expected[set],
            "task {id} ({set}) has other outputs: {t:#}"
        );
        let one: Value = {
            let out = orrery(scratch.path(), &["status", id, "--json", "--store", &url]);
            serde_json::from_slice(&out.stdout).unwrap()
        };
        let workers: Vec<&str> = one["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        // Started more than once only after its worker was killed or drained.
        let (last, before) = workers.split_last().expect("started at least once");
        for w in before {
            assert!(
                w.ends_with(&killed_id) || w.ends_with(&drained_id),
                "task {id} started on {w} and again on {last}: {workers:?}"
            );
        }
        if !before.is_empty() {
            taken_over += 1;
        }
    }
    eprintln!("{taken_over} of 30 tasks were continued by another worker");
    assert!(taken_over >= 1, "the killed worker held no task: {tasks:#}");
    let survivor = survivor.interrupt(PATIENCE);
    assert_eq!(survivor.code, Some(0), "{}", survivor.show());
}
