//! The README's hot-reload tour, through the binary: `orrery dev
//! examples/hot-reload/task.toml` runs until Ctrl-C; edits change the
//! greeting, a broken edit dead-letters work that the fix then resumes; an
//! agent that never returns to the host is told about waiting new code.

use orrery::error::exit;

use super::cli::watching;
use super::session::PATIENCE;
use crate::common::{Scratch, repo};

/// Copies the example into a scratch directory, with a quicker clock.
fn example() -> Scratch {
    let s = Scratch::new(&[]);
    let from = repo().join("examples/hot-reload");
    let task = std::fs::read_to_string(from.join("task.toml")).unwrap();
    s.write(
        "task.toml",
        &task.replace("period_ms = 1000", "period_ms = 100"),
    );
    for role in ["clock", "greeter"] {
        let text = std::fs::read_to_string(from.join(format!("scripts/{role}.lua"))).unwrap();
        s.write(&format!("scripts/{role}.lua"), &text);
    }
    s
}

fn edit_greeter(s: &Scratch, from: &str, to: &str) {
    let path = s.path().join("scripts/greeter.lua");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from:?} not in greeter.lua");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

#[test]
fn the_hot_reload_example_runs_until_ctrl_c_and_takes_edits() {
    let s = example();
    let mut dev = watching(s.path(), &["dev", "task.toml"]);
    dev.wait_for("hello, ", PATIENCE);

    edit_greeter(&s, "\"hello, %s\"", "\"good morning, %s\"");
    dev.wait_for("reloaded scripts/greeter.lua", PATIENCE);
    let line = dev.wait_for("good morning, ", PATIENCE);
    assert!(line.contains("has greeted"), "{line}");

    // A half-written edit: jobs fail, back off, and are dead-lettered...
    edit_greeter(&s, "local line = ", "error('half-written') local line = ");
    dev.wait_for("half-written", PATIENCE);
    dev.wait_for("dead-lettered after 5 attempts", PATIENCE);
    // ...and the fix gives them back to the pool.
    edit_greeter(&s, "error('half-written') local line = ", "local line = ");
    dev.wait_for("dead-lettered message", PATIENCE);
    dev.wait_for("good morning, ", PATIENCE);

    let done = dev.interrupt(PATIENCE);
    assert_eq!(done.code, Some(exit::INTERRUPTED), "{}", done.show());
    assert!(
        done.stdout.contains("task hot-reload-001: INTERRUPTED"),
        "{}",
        done.show()
    );
}

const LOOPER: &str = r#"local M = {}
function M.start(self)
  while true do log.info("round"); sleep(100) end
end
return M
"#;

#[test]
fn an_agent_that_never_returns_to_the_host_is_told_new_code_waits() {
    let s = Scratch::new(&[("looper.lua", LOOPER)]);
    s.write(
        "task.toml",
        "id = \"loop\"\ntype = \"test\"\ndescription = \"d\"\ntimeout = 60000\n",
    );
    let mut dev = watching(s.path(), &["dev", "task.toml"]);
    dev.wait_for("round", PATIENCE);
    s.write("scripts/looper.lua", &LOOPER.replace("round", "round two"));
    dev.wait_for("reloaded scripts/looper.lua", PATIENCE);
    let warning = dev.wait_for("has not returned to the host", PATIENCE);
    assert!(
        warning.contains("looper-1")
            && warning.contains("callback 'start'")
            && warning.contains("every(ms, fn)"),
        "{warning}"
    );
    let done = dev.interrupt(PATIENCE);
    assert_eq!(done.code, Some(exit::INTERRUPTED), "{}", done.show());
}
