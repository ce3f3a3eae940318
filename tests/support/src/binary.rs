//! The `orrery` binary as the tests run it: one command builder that clears
//! the environment, runs to completion, and runs in the background whose
//! stderr lines can be awaited.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orrery::llm::API_KEY_VARS;

/// What the tests log by default: warnings and the scripts' own lines.
const TEST_LOG: &str = "warn,orrery::script=info";

/// The `orrery` binary cargo built beside the running test binary
/// (`target/<profile>/deps/<suite>-<hash>` → `target/<profile>/orrery`),
/// as `assert_cmd` finds it.
///
/// # Panics
/// When it is not there (a test binary run outside its target directory).
pub fn orrery_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .expect("the test binary sits in a target directory");
    let bin = dir.join(format!("orrery{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "no orrery binary at {} (beside the test binary {}); run the tests with cargo",
        bin.display(),
        exe.display()
    );
    bin
}

/// The one builder of `orrery` commands: runs in `dir` with `args`, with
/// every `ORRERY_*` and `OTEL_*` variable (no trace leaves a test unless it
/// asks), every API-key variable ([`API_KEY_VARS`]:
/// `OPENAI_API_KEY`, `OPENROUTER_API_KEY`, ...) and `RUST_LOG` removed, so
/// nothing in the developer's environment changes what a test does. A test
/// adds the variables it means with `.env(...)`.
pub fn orrery_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(orrery_bin());
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("ORRERY_")
            || name.starts_with("OTEL_")
            || API_KEY_VARS.contains(&name)
            || name == "RUST_LOG"
        {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Runs the `orrery` binary with `args` in `dir` to its end (logging
/// warnings and script lines); panics when it cannot start.
pub fn orrery(dir: &Path, args: &[&str]) -> Output {
    orrery_env(dir, args, &[])
}

/// Runs the `orrery` binary like [`orrery`], with the variables `env` set.
pub fn orrery_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    orrery_command(dir, args)
        .env("ORRERY_LOG", TEST_LOG)
        .envs(env.iter().copied())
        .output()
        .expect("cannot start the orrery binary")
}

/// Describes a finished command for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "exit: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An `orrery` process running in the background, whose stderr lines can be
/// awaited while it runs. Killed when dropped, so a failing test leaves no
/// process behind.
pub struct Running {
    child: Child,
    lines: Receiver<String>,
    stderr: Vec<String>,
    stdout: Option<JoinHandle<String>>,
}

/// Starts `orrery args` in `dir` with the variables `env` set (logging
/// warnings and script lines unless `env` sets `ORRERY_LOG`).
pub fn spawn_orrery(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut child = orrery_command(dir, args)
        .env("ORRERY_LOG", TEST_LOG)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the orrery binary");
    let (tx, lines) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    Running {
        child,
        lines,
        stderr: Vec::new(),
        stdout: Some(stdout),
    }
}

/// How a background `orrery` ended.
pub struct Finished {
    /// Its exit code (`None` when a signal ended it).
    pub code: Option<i32>,
    /// All it printed on stdout.
    pub stdout: String,
    /// All it printed on stderr, one line each.
    pub stderr: String,
}

impl Finished {
    /// Describes the run for assertion messages.
    pub fn show(&self) -> String {
        format!(
            "exit: {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Running {
    /// Waits until a stderr line contains `needle` and returns that line;
    /// panics with what was seen after `within`, or when the process ended first.
    pub fn wait_for(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no stderr line containing {needle:?} within {within:?} ({}); seen:\n{}",
                    match e {
                        RecvTimeoutError::Timeout => "still running",
                        RecvTimeoutError::Disconnected => "the process closed its stderr",
                    },
                    self.stderr.join("\n")
                ),
            }
        }
    }

    /// The process id, to signal it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGINT, as Ctrl-C does, then waits for the end like [`Running::finish`].
    pub fn interrupt(self, within: Duration) -> Finished {
        self.signal("INT");
        self.finish(within)
    }

    /// Sends the signal `name` (`INT`, `TERM`, ...) without waiting.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("the kill command runs");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Waits for the process to end (at most `within`, then kills it and
    /// panics with what it printed).
    pub fn finish(mut self, within: Duration) -> Finished {
        let deadline = Instant::now() + within;
        // The end of stderr is the event: it closes when the process exits.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.stderr.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    // Something it started may hold stderr open: the
                    // process itself is what must have ended.
                    if matches!(self.child.try_wait(), Ok(Some(_))) {
                        break;
                    }
                    self.kill();
                    panic!(
                        "orrery did not end within {within:?}; stderr:\n{}",
                        self.stderr.join("\n")
                    );
                }
            }
        }
        let status = self.child.wait().expect("wait for orrery");
        let stdout = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Finished {
            code: status.code(),
            stdout,
            stderr: self.stderr.join("\n"),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Reaped already when the test finished it: then this does nothing.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
