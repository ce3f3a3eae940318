//! The `orrery` binary in watch mode: `run --watch` and `dev` reload edits,
//! print refused code as `path:line: message`, and stop on Ctrl-C with a report.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use orrery::error::exit;

use super::session::PATIENCE;
use crate::common::Scratch;

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

/// The binary running in the background, its stderr lines arriving on a
/// channel; killed if the test fails before it exits. (Shared by this
/// suite's tests of the binary.)
pub(super) struct Watching {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

/// `orrery args...` in `dir`, with no store, log or Rust-log setting from outside.
pub(super) fn orrery(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orrery"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("ORRERY_STORE")
        .env_remove("ORRERY_LOG")
        .env_remove("RUST_LOG");
    cmd
}

impl Watching {
    pub(super) fn start(dir: &std::path::Path, args: &[&str]) -> Watching {
        Self::start_with(dir, args, Stdio::piped())
    }

    /// Like [`Watching::start`], with stdout going to `stdout`.
    pub(super) fn start_with(dir: &std::path::Path, args: &[&str], stdout: Stdio) -> Watching {
        let mut child = orrery(dir, args)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the orrery binary");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watching {
            child: Some(child),
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (at most [`PATIENCE`]) for a stderr line containing `text`; returns it.
    pub(super) fn line_with(&mut self, text: &str) -> String {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stderr line containing {text:?} within {PATIENCE:?}; stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Sends SIGINT, as Ctrl-C does, and returns at once.
    pub(super) fn signal_interrupt(&self) {
        let child = self.child.as_ref().expect("running");
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Sends SIGINT, as Ctrl-C does, and returns the exit code and stdout
    /// (empty when stdout was not piped here).
    pub(super) fn interrupt(self) -> (i32, String) {
        self.signal_interrupt();
        self.wait()
    }

    /// Waits (at most [`PATIENCE`]) for the exit; returns the exit code and
    /// stdout (empty when stdout was not piped here).
    pub(super) fn wait(mut self) -> (i32, String) {
        let mut child = self.child.take().unwrap();
        let (tx, done) = mpsc::channel();
        let stdout = child.stdout.take();
        std::thread::spawn(move || {
            let mut out = String::new();
            if let Some(mut stdout) = stdout {
                let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
            }
            let _ = tx.send((child.wait().expect("wait"), out));
        });
        let (status, out) = done
            .recv_timeout(PATIENCE)
            .expect("orrery exits after Ctrl-C");
        (status.code().expect("exit code"), out)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn run_watch_reloads_edits_refuses_broken_code_and_stops_on_ctrl_c() {
    let scratch = Scratch::new(&[("ticker.lua", &ticker("v1"))]);
    scratch.write("task.toml", TASK);
    let mut orrery = Watching::start(scratch.path(), &["run", "task.toml", "--watch"]);
    orrery.line_with("watching scripts");
    orrery.line_with("tick v1");

    scratch.write("scripts/ticker.lua", "local M = {\nreturn M\n");
    let refused = orrery.line_with("scripts/ticker.lua:2:");
    assert!(refused.contains("ERROR"), "{refused}");
    orrery.line_with(
        "reload of scripts/ticker.lua refused: agent ticker-1 keeps running the previous code",
    );
    orrery.line_with("tick v1");

    scratch.write("scripts/ticker.lua", &ticker("v2"));
    let reloaded = orrery.line_with("reloaded scripts/ticker.lua");
    assert!(
        reloaded.contains("agent ticker-1 switches at its next callback"),
        "{reloaded}"
    );
    orrery.line_with("tick v2");

    let (code, stdout) = orrery.interrupt();
    assert_eq!(code, exit::INTERRUPTED, "stdout:\n{stdout}");
    assert!(stdout.contains("task watch: INTERRUPTED"), "{stdout}");
}

#[test]
fn dev_is_run_watch() {
    let scratch = Scratch::new(&[("ticker.lua", &ticker("v1"))]);
    scratch.write("task.toml", TASK);
    let mut orrery = Watching::start(scratch.path(), &["dev", "task.toml", "--json"]);
    orrery.line_with("tick v1");
    scratch.write("scripts/ticker.lua", &ticker("v2"));
    orrery.line_with("tick v2");
    let (code, stdout) = orrery.interrupt();
    assert_eq!(code, exit::INTERRUPTED);
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON report");
    assert_eq!(report["status"], "interrupted");
    assert_eq!(report["metrics"]["host"]["reloads"], 1);
}
