//! A developer's own worker (`--scripts DIR`) runs its tasks with that
//! code and reloads it on edit, as `orrery run --watch` does: a running
//! task's agent takes the new code at its next callback.

use crate::common::Scratch;
use crate::util::{PATIENCE, server, submit, wait_state, worker_with};

/// Ticks until new code ends it.
const TICKER_V1: &str = r#"
local M = {}
function M.start(self) every(100, "tick") end
function M.tick(self) log.info("ticking v1") end
return M
"#;

const TICKER_V2: &str = r#"
local M = {}
function M.start(self) every(100, "tick") end
function M.tick(self)
  task.output("version", 2)
  agent.finish()
end
return M
"#;

#[test]
fn a_worker_with_its_own_scripts_reloads_them_into_a_running_task() {
    let server = server();
    let scratch = Scratch::new(&[("ticker.lua", TICKER_V1)]);
    scratch.write(
        "ticker.toml",
        "id = \"ticker\"\ntype = \"test\"\ndescription = \"ticks\"\ntimeout = 60000\nagents = [\"ticker\"]\n",
    );
    let scripts = scratch.scripts();
    let mut w = worker_with(
        scratch.path(),
        &server,
        &["--max-tasks", "1", "--scripts", scripts.to_str().unwrap()],
    );
    let id = submit(scratch.path(), &server, "ticker.toml");
    w.wait_for("ticking v1", PATIENCE);
    scratch.write("scripts/ticker.lua", TICKER_V2);
    let task = wait_state(scratch.path(), &server, &id, "finished");
    assert_eq!(task["status"], "complete", "{task:#}");
    assert_eq!(task["outputs"]["version"], 2, "{task:#}");
    let w = w.interrupt(PATIENCE);
    assert_eq!(w.code, Some(0), "{}", w.show());
}
