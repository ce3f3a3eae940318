//! `orrery inspect` and `orrery clean` against what real runs left in a server.

use serde_json::{Value, json};

use crate::common::{RedisServer, Scratch, orrery, repo, show, spawn_orrery};
use crate::multiprocess::{PATIENCE, inspect, task_file};
use crate::runs::{FAILING, SENDER};
use crate::util::{connect, envelope};

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// After the example task: its run, agents with phase history, blackboard,
/// messages and metrics, as text and as JSON whose metrics equal the run's.
#[test]
fn inspect_shows_a_finished_run() {
    let server = RedisServer::start();
    let url = server.url();
    let run = orrery(
        &repo(),
        &[
            "run",
            "examples/deploy.toml",
            "--store",
            &url,
            "--json",
            "-q",
        ],
    );
    assert_eq!(run.status.code(), Some(0), "{}", show(&run));
    let report: Value = serde_json::from_slice(&run.stdout).unwrap();

    let out = orrery(&repo(), &["inspect", "deploy-001", "--store", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let t = text(&out);
    for expected in [
        "task deploy-001 (deployment): complete",
        &format!("store {url}"),
        "agents (3):",
        "INIT (+0 ms) > READY",
        "blackboard (",
        "outputs/plan = {",
        "outputs/validation = {\"passed\":true",
        "messages: 0 pending, 0 dead-lettered",
        "custom.steps_reported = 5",
    ] {
        assert!(t.contains(expected), "missing {expected:?} in:\n{t}");
    }

    let state = {
        let scratch = Scratch::new(&[]);
        inspect(&scratch, &server, "deploy-001")
    };
    assert_eq!(state["task"]["status"], "complete");
    assert_eq!(state["task"]["definition"]["id"], "deploy-001");
    let agents: Vec<&str> = state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["alpha-1", "beta-1", "gamma-1"]);
    assert_eq!(
        state["agents"][0]["history"].as_array().unwrap().len(),
        6,
        "{state:#}"
    );
    let m = &state["metrics"];
    let r = &report["metrics"];
    assert_eq!(m["blackboard_writes"], r["blackboard_writes"], "{state:#}");
    assert_eq!(m["blackboard_reads"], r["blackboard_reads"], "{state:#}");
    assert_eq!(m["spawn_events"], r["spawn_events"]);
    assert_eq!(
        m["agent.alpha-1.messages_sent"],
        r["agent_metrics"]["alpha-1"]["messages_sent"]
    );
    assert_eq!(
        state["blackboard"]["outputs/plan"],
        report["outputs"]["plan"]
    );
}

/// Dead letters and pending messages are listed with their queue and attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_pending_and_dead_letters() {
    let server = RedisServer::start();
    let url = server.url();
    let scratch = Scratch::new(&[("sender.lua", SENDER), ("failing.lua", FAILING)]);
    let file = task_file(&scratch, "dl", &["failing", "sender"]);
    let run = spawn_orrery(
        scratch.path(),
        &["run", &file, "--store", &url],
        &[("ORRERY_MAX_ATTEMPTS", "2")],
    );
    let done = run.finish(PATIENCE);
    // The dead letter fails the run with the code of its handler's error.
    assert_eq!(done.code, Some(3), "{}", done.show());
    // A message nobody took yet, left by hand.
    connect(&url)
        .await
        .queue_push("dl", "nobody", &envelope("m9", "later"))
        .await
        .unwrap();

    let state = inspect(&scratch, &server, "dl");
    let dead = state["dead_letters"].as_array().unwrap();
    assert_eq!(dead.len(), 1, "{state:#}");
    assert_eq!(dead[0]["queue"], "failing");
    assert_eq!(dead[0]["envelope"]["type"], "job");
    assert_eq!(dead[0]["envelope"]["attempts"], json!(2));
    assert_eq!(dead[0]["envelope"]["payload"], json!({ "n": 1 }));
    let pending = state["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{state:#}");
    assert_eq!(
        (
            pending[0]["queue"].as_str(),
            pending[0]["envelope"]["id"].as_str()
        ),
        (Some("nobody"), Some("m9"))
    );

    let out = orrery(scratch.path(), &["inspect", "dl", "--store", &url]);
    let t = text(&out);
    assert!(t.contains("messages: 1 pending, 1 dead-lettered"), "{t}");
    assert!(t.contains("dead    to failing    job"), "{t}");
    assert!(t.contains("attempts 2"), "{t}");
}

#[test]
fn clean_deletes_a_task_and_keeps_a_running_one() {
    let server = RedisServer::start();
    let url = server.url();
    let run = orrery(
        &repo(),
        &["run", "examples/deploy.toml", "--store", &url, "-q"],
    );
    assert_eq!(run.status.code(), Some(0), "{}", show(&run));
    let cleaned = orrery(&repo(), &["clean", "deploy-001", "--store", &url]);
    assert_eq!(cleaned.status.code(), Some(0), "{}", show(&cleaned));
    assert!(text(&cleaned).starts_with("removed "), "{}", show(&cleaned));
    let gone = orrery(&repo(), &["inspect", "deploy-001", "--store", &url]);
    assert_eq!(gone.status.code(), Some(2), "{}", show(&gone));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("holds nothing for this task"));
    let again = orrery(&repo(), &["clean", "deploy-001", "--store", &url]);
    assert_eq!(again.status.code(), Some(0));
    assert!(
        text(&again).contains("nothing to remove"),
        "{}",
        show(&again)
    );

    // A running task is kept unless forced.
    let scratch = Scratch::new(&[(
        "waiter.lua",
        "return { start = function() bus.receive(60000) end }",
    )]);
    let file = task_file(&scratch, "busy", &["waiter"]);
    let mut running = spawn_orrery(scratch.path(), &["run", &file, "--store", &url], &[]);
    running.wait_for("waiter-1   - -> INIT", PATIENCE);
    let refused = orrery(scratch.path(), &["clean", "busy", "--store", &url]);
    assert_eq!(refused.status.code(), Some(5), "{}", show(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    let forced = orrery(
        scratch.path(),
        &["clean", "busy", "--store", &url, "--force"],
    );
    assert_eq!(forced.status.code(), Some(0), "{}", show(&forced));
    running.kill();
}

#[test]
fn inspect_and_clean_refuse_bad_input() {
    let dir = repo();
    for cmd in ["inspect", "clean"] {
        let embedded = orrery(&dir, &[cmd, "deploy-001"]);
        assert_eq!(embedded.status.code(), Some(2), "{}", show(&embedded));
        assert!(String::from_utf8_lossy(&embedded.stderr).contains("needs a shared store"));
        let bad = orrery(&dir, &[cmd, "a:b*", "--store", "redis://127.0.0.1:1/0"]);
        assert_eq!(bad.status.code(), Some(2), "{}", show(&bad));
        assert!(
            String::from_utf8_lossy(&bad.stderr).contains("TASK_ID"),
            "{}",
            show(&bad)
        );
    }
    let url = orrery(
        &dir,
        &["inspect", "x", "--store", "redis://127.0.0.1:notaport/0"],
    );
    assert_eq!(url.status.code(), Some(2), "{}", show(&url));
    assert!(
        String::from_utf8_lossy(&url.stderr).contains("flag --store"),
        "{}",
        show(&url)
    );
}
