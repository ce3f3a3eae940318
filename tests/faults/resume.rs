//! `orrery resume`: a task whose every process was killed continues in a
//! new process, its agents in their stored phase, with their checkpoints,
//! and ends with the outputs of an uninterrupted run.

use serde_json::Value;

use crate::common::{Scratch, orrery, show, spawn_orrery};
use crate::util::{PATIENCE, inspect, server_with, task_file};

/// Sends 300 numbers, keeping its progress as a checkpoint; resumed, it
/// goes on after the last one it kept.
const COUNTER: &str = r#"
local M = {}
local function count_from(self, first)
  for i = first, 300 do
    bus.send("adder", "n", { n = i })
    agent.checkpoint(i)
    if i == 150 then log.info("halfway") end
    sleep(5)
  end
  bus.send("adder", "done", {})
end
function M.start(self) count_from(self, 1) end
function M.on_resume(self, checkpoint)
  log.info("resumed after " .. tostring(checkpoint))
  count_from(self, (checkpoint or 0) + 1)
end
return M
"#;

/// Adds each number once (a redelivered one is recognised by its key) and
/// records the sum when the counter is done. With several adders the last
/// numbers may still be in another's hands when one of them gets `done`: it
/// passes `done` on until all 300 are in (or gives up after 4 s, and the
/// count shows what is missing).
const ADDER: &str = r#"
local M = {}
function M.on_message(self, msg)
  if msg.type == "done" then
    local tries = msg.payload.tries or 0
    if #blackboard.keys("got/") < 300 and tries < 200 then
      sleep(20)
      bus.send("adder", "done", { tries = tries + 1 })
      return
    end
    local sum = 0
    for _, k in ipairs(blackboard.keys("got/")) do sum = sum + blackboard.get(k) end
    task.output("sum", sum)
    task.output("count", #blackboard.keys("got/"))
    agent.finish()
    return
  end
  blackboard.set("got/" .. msg.payload.n, msg.payload.n)
end
return M
"#;

const FAST: [(&str, &str); 1] = [("ORRERY_HEARTBEAT_INTERVAL", "100")];

fn outputs(state: &Value) -> Value {
    let bb = state["blackboard"].as_object().unwrap();
    serde_json::json!({
        "sum": bb.get("outputs/sum"),
        "count": bb.get("outputs/count"),
    })
}

#[test]
fn a_task_whose_processes_all_died_resumes_to_the_same_outputs() {
    let server = server_with(&[]);
    let scratch = Scratch::new(&[("counter.lua", COUNTER), ("adder.lua", ADDER)]);
    let url = server.url();
    let fast = FAST;

    // Uninterrupted, for the outputs to compare with.
    let whole = task_file(&scratch, "whole", &["adder", "counter"]);
    let out = orrery(scratch.path(), &["run", &whole, "--store", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let expected = outputs(&inspect(&scratch, &server, "whole"));
    assert_eq!(
        expected["sum"],
        serde_json::json!(300 * 301 / 2),
        "{expected}"
    );

    let cut = task_file(&scratch, "cut", &["adder", "counter"]);
    let mut run = spawn_orrery(scratch.path(), &["run", &cut, "--store", &url], &fast);
    run.wait_for("halfway", PATIENCE);
    let killed = std::time::Instant::now();
    run.kill();
    let resumed = spawn_orrery(scratch.path(), &["resume", "cut", "--store", &url], &fast);
    let done = resumed.finish(PATIENCE);
    let took = killed.elapsed();
    assert_eq!(done.code, Some(0), "{}", done.show());
    assert!(done.stderr.contains("resumed after"), "{}", done.show());
    let state = inspect(&scratch, &server, "cut");
    assert_eq!(state["task"]["status"], "complete", "{state:#}");
    assert_eq!(outputs(&state), expected, "{state:#}");
    println!(
        "resume after SIGKILL of the only process: finished {} ms after the kill",
        took.as_millis()
    );
}

/// Two processes — the first and a joined one running a second adder — both
/// SIGKILLed mid-run: `resume` waits out both, fences both, brings back the
/// agents of each (three, under their ids) and ends with the same outputs.
#[test]
fn a_task_of_two_processes_both_killed_resumes_to_the_same_outputs() {
    let server = server_with(&[]);
    let scratch = Scratch::new(&[("counter.lua", COUNTER), ("adder.lua", ADDER)]);
    let url = server.url();

    let whole = task_file(&scratch, "whole2", &["adder", "counter"]);
    let out = orrery(scratch.path(), &["run", &whole, "--store", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let expected = outputs(&inspect(&scratch, &server, "whole2"));

    let cut = task_file(&scratch, "cut2", &["adder", "counter"]);
    let mut first = spawn_orrery(scratch.path(), &["run", &cut, "--store", &url], &FAST);
    first.wait_for("counter-1", PATIENCE);
    let join = ["run", "--join", "cut2", "--role", "adder", "--store", &url];
    let mut joiner = spawn_orrery(scratch.path(), &join, &FAST);
    joiner.wait_for("-> INIT", PATIENCE);
    first.wait_for("halfway", PATIENCE);
    let killed = std::time::Instant::now();
    first.kill();
    joiner.kill();
    let resumed = spawn_orrery(scratch.path(), &["resume", "cut2", "--store", &url], &FAST);
    let done = resumed.finish(PATIENCE);
    let took = killed.elapsed();
    assert_eq!(done.code, Some(0), "{}", done.show());
    assert!(done.stderr.contains("resumed after"), "{}", done.show());
    let state = inspect(&scratch, &server, "cut2");
    assert_eq!(state["task"]["status"], "complete", "{state:#}");
    assert_eq!(outputs(&state), expected, "{state:#}");
    let agents: Vec<&str> = state["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert!(
        agents.contains(&"adder-2"),
        "the joiner's adder: {agents:?}"
    );
    assert_eq!(state["dead_letters"], serde_json::json!([]), "{state:#}");
    println!(
        "resume after SIGKILL of both processes: finished {} ms after the kills",
        took.as_millis()
    );
}

/// No `on_resume`: resumed, its `start` runs again from the top and sets
/// the phases it had already reached; the second time it does not stop.
const STEPPER: &str = r#"
local M = {}
function M.start(self)
  state.set("PLANNING")
  state.set("EXECUTING")
  if not blackboard.get("started") then
    blackboard.set("started", true)
    sleep(1) -- settles the write before the test is told to kill
    log.info("working")
    sleep(60000)
  end
  state.set("VALIDATING")
  task.output("done", true)
  agent.finish()
end
return M
"#;

/// An agent resumed in EXECUTING whose `start` runs again replays
/// `state.set("PLANNING")` and `"EXECUTING"` (nothing changes) instead of
/// failing with an illegal transition — the default agents and the
/// word-count dispatcher set phases in `start`, and failed so after a
/// worker's death (`fleet survive`, about one run in four under load).
#[test]
fn a_resumed_agent_s_start_replays_the_phases_it_had_reached() {
    let server = server_with(&[]);
    let scratch = Scratch::new(&[("stepper.lua", STEPPER)]);
    let url = server.url();
    let file = task_file(&scratch, "steps", &["stepper"]);
    let mut run = spawn_orrery(scratch.path(), &["run", &file, "--store", &url], &FAST);
    run.wait_for("working", PATIENCE);
    run.kill();
    let resumed = spawn_orrery(scratch.path(), &["resume", "steps", "--store", &url], &FAST);
    let done = resumed.finish(PATIENCE);
    assert_eq!(done.code, Some(0), "{}", done.show());
    let state = inspect(&scratch, &server, "steps");
    assert_eq!(state["task"]["status"], "complete", "{state:#}");
    let phases: Vec<&str> = state["agents"][0]["history"]
        .as_array()
        .unwrap_or_else(|| panic!("history: {state:#}"))
        .iter()
        .filter_map(|h| h["phase"].as_str())
        .collect();
    assert_eq!(
        phases,
        [
            "INIT",
            "READY",
            "PLANNING",
            "EXECUTING",
            "VALIDATING",
            "COMPLETE"
        ],
        "{state:#}"
    );
}
