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
/// records the sum when the counter is done.
const ADDER: &str = r#"
local M = {}
function M.on_message(self, msg)
  if msg.type == "done" then
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
    let fast = [("ORRERY_HEARTBEAT_INTERVAL", "100")];

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
