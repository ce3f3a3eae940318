//! Ctrl-C with piped output, through the binary with real pipes and real
//! signals: `orrery dev task.toml 2>&1 | tee log` when Ctrl-C also ended
//! `tee`, and `orrery dev task.toml | head -2`. Writing to a closed stdout or
//! stderr never panics or hangs; Ctrl-C always ends the run with exit 130.

use std::io::{BufRead, BufReader, PipeReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use orrery::error::exit;

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

fn orrery(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orrery"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("ORRERY_STORE")
        .env_remove("ORRERY_LOG")
        .env_remove("RUST_LOG");
    cmd
}

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
    let mut child = orrery(scratch.path(), &["dev", "task.toml"])
        .stdout(out_writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("orrery starts");
    let (tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |text: &str| {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {text:?} on stderr within {PATIENCE:?}"));
            if line.contains(text) {
                return;
            }
        }
    };
    wait_for("tick");
    interrupt(&child);
    wait_for("stopping: agents finish what they are doing");
    assert_eq!(exit_code(child), exit::INTERRUPTED);
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
    let mut child = orrery(scratch.path(), &["dev", "task.toml"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("orrery starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |text: &str, within: Duration| {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {text:?} on stderr within {within:?}"));
            if line.contains(text) {
                return;
            }
        }
    };
    wait_for("still looping", PATIENCE);
    interrupt(&child);
    wait_for("aborting them", PATIENCE);
    let out = child.wait_with_output().expect("orrery exits");
    assert_eq!(out.status.code(), Some(exit::INTERRUPTED));
    assert!(String::from_utf8_lossy(&out.stdout).contains("INTERRUPTED"));
}
