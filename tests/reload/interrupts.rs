//! Ctrl-C with piped output, through the binary with real pipes and real
//! signals: `orrery dev task.toml 2>&1 | tee log` when Ctrl-C also ended
//! `tee`, and `orrery dev task.toml | head -2`. Writing to a closed stdout or
//! stderr never panics or hangs; Ctrl-C always ends the run with exit 130.

use std::io::{BufRead, BufReader, PipeReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use orrery::error::exit;

use super::cli::{Watching, orrery};
use super::session::PATIENCE;
use crate::common::Scratch;

const TASK: &str = "id = \"pipes\"\ntype = \"test\"\ndescription = \"d\"\ntimeout = 60000\n";

/// Logs a line every 10 ms from a message handler, forever.
const CHATTY: &str = r#"
local M = {}
function M.start(self) self.n = 0; bus.send(agent.id, "tick", {}) end
function M.on_message(self, msg)
  self.n = self.n + 1
  log.info("tick", self.n)
  sleep(10)
  bus.send(agent.id, "tick", {})
end
return M
"#;

/// Loops in `start` and never returns to the host on its own.
const LOOPER: &str = r#"
local M = {}
function M.start(self)
  while true do log.info("still looping"); sleep(10) end
end
return M
"#;

/// Reads lines of `reader` on a thread until one contains `text`, then drops
/// the read end, as `tee` or `head` going away would.
fn read_until_then_close(reader: PipeReader, text: &str) {
    let lines = BufReader::new(reader).lines();
    for line in lines.map_while(Result::ok) {
        if line.contains(text) {
            return; // the reader is dropped here
        }
    }
    panic!("orrery ended before logging {text:?}");
}

fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits for `child` to exit; kills it and fails when it does not in time.
fn exit_code(mut child: Child) -> i32 {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status
                .code()
                .unwrap_or_else(|| panic!("killed by a signal: {status:?}"));
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("orrery did not exit within {PATIENCE:?} of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_after_tee_died_exits_130_without_a_panic() {
    let scratch = Scratch::new(&[("chatty.lua", CHATTY)]);
    scratch.write("task.toml", TASK);
    // `2>&1 | tee log`: stdout and stderr are one pipe.
    let (reader, writer) = std::io::pipe().unwrap();
    let child = orrery(scratch.path(), &["dev", "task.toml"])
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .expect("orrery starts");
    read_until_then_close(reader, "tick");
    // It keeps logging into the closed pipe for a while: no panic (101).
    std::thread::sleep(Duration::from_millis(200));
    interrupt(&child);
    assert_eq!(exit_code(child), exit::INTERRUPTED);
}

#[test]
fn ctrl_c_after_head_closed_stdout_exits_130_and_says_so_on_stderr() {
    let scratch = Scratch::new(&[("chatty.lua", CHATTY)]);
    scratch.write("task.toml", TASK);
    // `| head -2`: stdout is gone before the report is written.
    let (out_reader, out_writer) = std::io::pipe().unwrap();
    drop(out_reader);
    let mut dev = Watching::start_with(scratch.path(), &["dev", "task.toml"], out_writer.into());
    dev.line_with("tick");
    dev.signal_interrupt();
    dev.line_with("stopping: agents finish what they are doing");
    let (code, _) = dev.wait();
    assert_eq!(code, exit::INTERRUPTED);
}

#[test]
fn ctrl_c_ends_an_agent_looping_in_start_with_its_report_even_with_stderr_closed() {
    let scratch = Scratch::new(&[("looper.lua", LOOPER)]);
    scratch.write("task.toml", TASK);
    let (err_reader, err_writer) = std::io::pipe().unwrap();
    let child = orrery(scratch.path(), &["dev", "task.toml", "--json"])
        .stdout(Stdio::piped())
        .stderr(err_writer)
        .spawn()
        .expect("orrery starts");
    read_until_then_close(err_reader, "still looping");
    interrupt(&child);
    // The loop never returns: a second Ctrl-C aborts it at once.
    std::thread::sleep(Duration::from_millis(100));
    interrupt(&child);
    let out = child.wait_with_output().expect("orrery exits");
    assert_eq!(out.status.code(), Some(exit::INTERRUPTED));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the JSON report on stdout");
    assert_eq!(report["status"], "interrupted");
    assert!(
        report["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("looper-1 was still running when the run was aborted"),
        "{report:#}"
    );
}

#[test]
fn one_ctrl_c_ends_an_agent_looping_in_start_after_the_grace_period() {
    let scratch = Scratch::new(&[("looper.lua", LOOPER)]);
    scratch.write("task.toml", TASK);
    let mut dev = Watching::start(scratch.path(), &["dev", "task.toml"]);
    dev.line_with("still looping");
    dev.signal_interrupt();
    dev.line_with("aborting them");
    let child_done = dev.wait();
    assert_eq!(child_done.0, exit::INTERRUPTED);
    assert!(child_done.1.contains("INTERRUPTED"), "{}", child_done.1);
}
