//! The `orrery` binary in watch mode: `run --watch` and `dev` reload edits,
//! print refused code as `path:line: message`, and stop on Ctrl-C with a report.

use orrery::error::exit;

use super::session::PATIENCE;
use crate::common::{Running, Scratch, spawn_orrery};

const TASK: &str = "id = \"watch\"\ntype = \"test\"\ndescription = \"ticks\"\ntimeout = 60000\n";

/// Logs `tick <version> <n>` and sends itself the next tick, forever.
fn ticker(version: &str) -> String {
    format!(
        r#"local M = {{}}
function M.start(self) self.n = 0; bus.send(agent.id, "tick", {{}}) end
function M.on_message(self, msg)
  self.n = self.n + 1
  log.info("tick {version}", self.n)
  sleep(20)
  bus.send(agent.id, "tick", {{}})
end
return M
"#
    )
}

/// What `orrery run` logs when nothing is set: script lines and reloads.
pub(super) const RUN_LOG: &str = "warn,orrery::script=info,orrery::reload=info";

/// The binary running `args` in `dir` in the background (killed if the test
/// fails before it exits), logging as `orrery run` does when nothing is set.
pub(super) fn watching(dir: &std::path::Path, args: &[&str]) -> Running {
    spawn_orrery(dir, args, &[("ORRERY_LOG", RUN_LOG)])
}

#[test]
fn run_watch_reloads_edits_refuses_broken_code_and_stops_on_ctrl_c() {
    let scratch = Scratch::new(&[("ticker.lua", &ticker("v1"))]);
    scratch.write("task.toml", TASK);
    let mut orrery = watching(scratch.path(), &["run", "task.toml", "--watch"]);
    orrery.wait_for("watching scripts", PATIENCE);
    orrery.wait_for("tick v1", PATIENCE);

    scratch.write("scripts/ticker.lua", "local M = {\nreturn M\n");
    let refused = orrery.wait_for("scripts/ticker.lua:2:", PATIENCE);
    assert!(refused.contains("ERROR"), "{refused}");
    orrery.wait_for(
        "reload of scripts/ticker.lua refused: agent ticker-1 keeps running the previous code",
        PATIENCE,
    );
    orrery.wait_for("tick v1", PATIENCE);

    scratch.write("scripts/ticker.lua", &ticker("v2"));
    let reloaded = orrery.wait_for("reloaded scripts/ticker.lua", PATIENCE);
    assert!(
        reloaded.contains("agent ticker-1 switches at its next callback"),
        "{reloaded}"
    );
    orrery.wait_for("tick v2", PATIENCE);

    let done = orrery.interrupt(PATIENCE);
    assert_eq!(done.code, Some(exit::INTERRUPTED), "{}", done.show());
    assert!(
        done.stdout.contains("task watch: INTERRUPTED"),
        "{}",
        done.show()
    );
}

#[test]
fn dev_is_run_watch() {
    let scratch = Scratch::new(&[("ticker.lua", &ticker("v1"))]);
    scratch.write("task.toml", TASK);
    let mut orrery = watching(scratch.path(), &["dev", "task.toml", "--json"]);
    orrery.wait_for("tick v1", PATIENCE);
    scratch.write("scripts/ticker.lua", &ticker("v2"));
    orrery.wait_for("tick v2", PATIENCE);
    let done = orrery.interrupt(PATIENCE);
    assert_eq!(done.code, Some(exit::INTERRUPTED), "{}", done.show());
    let report: serde_json::Value = serde_json::from_str(&done.stdout).expect("a JSON report");
    assert_eq!(report["status"], "interrupted");
    assert_eq!(report["metrics"]["host"]["reloads"], 1);
}
