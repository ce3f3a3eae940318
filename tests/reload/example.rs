//! The README's hot-reload tour, through the binary: `orrery dev
//! examples/hot-reload/task.toml` runs until Ctrl-C; edits change the
//! greeting, a broken edit dead-letters work that the fix then resumes; an
//! agent that never returns to the host is told about waiting new code.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use orrery::error::exit;

use super::session::PATIENCE;
use crate::common::{Scratch, repo};

/// `orrery dev task.toml` in `dir`, its stderr lines on a channel.
struct Dev {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Dev {
    fn start(dir: &Path) -> Dev {
        let mut child = Command::new(env!("CARGO_BIN_EXE_orrery"))
            .args(["dev", "task.toml"])
            .current_dir(dir)
            .env_remove("ORRERY_STORE")
            .env_remove("ORRERY_LOG")
            .env_remove("RUST_LOG")
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
        Dev {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `text`, within `within`.
    fn line_with(&mut self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stderr line with {text:?} within {within:?}; stderr:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Ctrl-C; returns the exit code and stdout.
    fn interrupt(mut self) -> (i32, String) {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        let mut stdout = self.child.stdout.take().unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
        let status = self.child.wait().unwrap();
        (status.code().expect("exit code"), out)
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    let mut dev = Dev::start(s.path());
    dev.line_with("hello, ", PATIENCE);

    edit_greeter(&s, "\"hello, %s\"", "\"good morning, %s\"");
    dev.line_with("reloaded scripts/greeter.lua", PATIENCE);
    let line = dev.line_with("good morning, ", PATIENCE);
    assert!(line.contains("has greeted"), "{line}");

    // A half-written edit: jobs fail, back off, and are dead-lettered...
    edit_greeter(&s, "local line = ", "error('half-written') local line = ");
    dev.line_with("half-written", PATIENCE);
    dev.line_with("dead-lettered after 5 attempts", PATIENCE);
    // ...and the fix gives them back to the pool.
    edit_greeter(&s, "error('half-written') local line = ", "local line = ");
    dev.line_with("dead-lettered message", PATIENCE);
    dev.line_with("good morning, ", PATIENCE);

    let (code, stdout) = dev.interrupt();
    assert_eq!(code, exit::INTERRUPTED, "{stdout}");
    assert!(
        stdout.contains("task hot-reload-001: INTERRUPTED"),
        "{stdout}"
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
    let mut dev = Dev::start(s.path());
    dev.line_with("round", PATIENCE);
    s.write("scripts/looper.lua", &LOOPER.replace("round", "round two"));
    dev.line_with("reloaded scripts/looper.lua", PATIENCE);
    let warning = dev.line_with("has not returned to the host", PATIENCE);
    assert!(
        warning.contains("looper-1")
            && warning.contains("callback 'start'")
            && warning.contains("every(ms, fn)"),
        "{warning}"
    );
    let (code, _) = dev.interrupt();
    assert_eq!(code, exit::INTERRUPTED);
}
