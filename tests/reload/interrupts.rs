//! Ctrl-C with piped output, through the binary with real pipes and real
//! signals: `orrery dev task.toml 2>&1 | tee log` when Ctrl-C also ended
//! `tee`, and `orrery dev task.toml | head -2`. Writing to a closed stdout or
//! stderr never panics or hangs; Ctrl-C always ends the run with exit 130.

use std::io::{BufRead, BufReader, PipeReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use orrery::error::exit;

use super::cli::watching;
use super::session::PATIENCE;
use crate::common::{Scratch, orrery_command};

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

/// The lines `reader` gets, on a channel (read on a thread of their own).
fn lines_of(reader: PipeReader) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Waits (at most [`PATIENCE`]) for a line containing `text`.
fn wait_line(lines: &mpsc::Receiver<String>, text: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(text) => return,
            Ok(_) => {}
            Err(_) => panic!("no line with {text:?} within {PATIENCE:?}"),
        }
    }
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
    let child = orrery_command(scratch.path(), &["dev", "task.toml"])
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
    let (err_reader, err_writer) = std::io::pipe().unwrap();
    let child = orrery_command(scratch.path(), &["dev", "task.toml"])
        .stdout(out_writer)
        .stderr(err_writer)
        .spawn()
        .expect("orrery starts");
    let lines = lines_of(err_reader);
    wait_line(&lines, "tick");
    interrupt(&child);
    wait_line(&lines, "stopping: agents finish what they are doing");
    assert_eq!(exit_code(child), exit::INTERRUPTED);
}

#[test]
fn ctrl_c_ends_an_agent_looping_in_start_with_its_report_even_with_stderr_closed() {
    let scratch = Scratch::new(&[("looper.lua", LOOPER)]);
    scratch.write("task.toml", TASK);
    let (err_reader, err_writer) = std::io::pipe().unwrap();
    let child = orrery_command(scratch.path(), &["dev", "task.toml", "--json"])
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
    let mut dev = watching(scratch.path(), &["dev", "task.toml"]);
    dev.wait_for("still looping", PATIENCE);
    let status = Command::new("kill")
        .args(["-INT", &dev.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    dev.wait_for("aborting them", PATIENCE);
    let done = dev.finish(PATIENCE);
    assert_eq!(done.code, Some(exit::INTERRUPTED), "{}", done.show());
    assert!(done.stdout.contains("INTERRUPTED"), "{}", done.show());
}
