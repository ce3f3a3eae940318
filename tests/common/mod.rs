//! Shared helpers of the integration tests: the `orrery` binary, scratch
//! script directories, in-process runs, and a real `redis-server` on a free port.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orrery::config::Config;
use orrery::orchestrator::Orchestrator;
use orrery::report::RunReport;
use orrery::scripts::ScriptRegistry;
use orrery::task::Task;

/// The repository root (where `scripts/`, `stdlib/` and `examples/` are).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the `orrery` binary with `args` in `dir`; on failure to start, panics.
pub fn orrery(dir: &Path, args: &[&str]) -> Output {
    orrery_env(dir, args, &[])
}

/// Runs the `orrery` binary like [`orrery`], with extra environment variables.
pub fn orrery_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orrery"))
        .args(args)
        .current_dir(dir)
        .env_remove("ORRERY_STORE")
        .env("ORRERY_LOG", "warn,orrery::script=info")
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

/// A scratch directory with a `scripts/` folder filled from `(name, source)` pairs.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new(scripts: &[(&str, &str)]) -> Scratch {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("scripts")).unwrap();
        for (name, source) in scripts {
            let path = dir.path().join("scripts").join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, source).unwrap();
        }
        Scratch { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn scripts(&self) -> PathBuf {
        self.dir.path().join("scripts")
    }

    /// Writes a file relative to the scratch root.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// A minimal task with the given id and timeout.
pub fn task(id: &str, timeout_ms: u64) -> Task {
    Task::from_toml(
        &format!(
            "id = \"{id}\"\ntype = \"test\"\ndescription = \"test task\"\ntimeout = {timeout_ms}\n"
        ),
        "test",
    )
    .unwrap()
}

/// The stores a shared test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
}

impl Backend {
    /// Every backend the parametrised suite covers.
    pub fn all() -> Vec<Backend> {
        vec![Backend::Memory, Backend::Redis]
    }
}

/// Runs `task` in-process with the scripts of `scripts_dir` on `backend`.
pub async fn run_in_process(
    backend: Backend,
    scripts_dir: &Path,
    task: Task,
    config: Config,
) -> RunReport {
    let mut config = config;
    config.scripts = scripts_dir.to_path_buf();
    let _server;
    if backend == Backend::Redis {
        let server = RedisServer::start();
        config.store = server.url();
        _server = Some(server);
    }
    let registry =
        Arc::new(ScriptRegistry::load(&config.scripts, &config.stdlib).expect("scripts load"));
    let store = orrery::store::open(&config).await.expect("store opens");
    Orchestrator::new(task, config, store, registry)
        .expect("task accepted")
        .run()
        .await
        .expect("task runs")
}

/// A `redis-server` on a free port, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    persistent: bool,
}

impl RedisServer {
    /// Starts a server keeping nothing on disk; fails the test with an install
    /// hint when there is no binary.
    pub fn start() -> RedisServer {
        Self::launch(false)
    }

    /// Starts a server that writes every change to its append-only file before
    /// answering, so a [`restart`](Self::restart) loses nothing acknowledged.
    pub fn start_persistent() -> RedisServer {
        Self::launch(true)
    }

    fn launch(persistent: bool) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            persistent,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let bin = std::env::var("ORRERY_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let port = self.port.to_string();
        let mut args = vec!["--port", &port, "--bind", "127.0.0.1", "--save", ""];
        if self.persistent {
            args.extend(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            args.extend(["--appendonly", "no"]);
        }
        let child = Command::new(&bin)
            .args(&args)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start '{bin}' ({e}). The Redis-store tests need a real server: \
                     install one with `apt-get install redis-server` (or set ORRERY_REDIS_SERVER \
                     to a redis-server or dragonfly binary)."
                )
            });
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (SIGKILL, as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "redis-server on port {} did not start within 10 s",
            self.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An `orrery` process running in the background, whose stderr lines can be
/// awaited while it runs.
pub struct Running {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: Vec<String>,
    stdout: std::thread::JoinHandle<String>,
}

/// Starts `orrery args` in `dir` with extra environment `env`.
pub fn spawn_orrery(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
    use std::io::{BufRead, Read};
    let mut child = Command::new(env!("CARGO_BIN_EXE_orrery"))
        .args(args)
        .current_dir(dir)
        .env_remove("ORRERY_STORE")
        .env("ORRERY_LOG", "warn,orrery::script=info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the orrery binary");
    let (tx, lines) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
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
    let mut stdout = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    Running {
        child,
        lines,
        stderr: Vec::new(),
        stdout,
    }
}

/// How a background `orrery` ended.
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
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
    /// Waits until a stderr line contains `needle`; panics with what was seen
    /// after `within`, or when the process ended first.
    pub fn wait_for(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.stderr.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "no stderr line containing {needle:?} within {within:?}; seen:\n{}",
                    self.stderr.join("\n")
                ),
            }
        }
    }

    /// The process id, to signal it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to end (at most `within`, then kills it and panics).
    pub fn finish(mut self, within: Duration) -> Finished {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                self.kill();
                let rest: Vec<String> = self.lines.try_iter().collect();
                panic!(
                    "orrery did not end within {within:?}; stderr:\n{}\n{}",
                    self.stderr.join("\n"),
                    rest.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = self.stdout.join().unwrap_or_default();
        self.stderr.extend(self.lines.iter());
        Finished {
            code: status.code(),
            stdout,
            stderr: self.stderr.join("\n"),
        }
    }
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
