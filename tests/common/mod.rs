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
        vec![Backend::Memory]
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
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server; fails the test with an install hint when there is no binary.
    pub fn start() -> RedisServer {
        let bin = std::env::var("ORRERY_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(&bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(dir.path())
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
        let server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        server.wait_ready();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
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
        let _ = self.child.kill();
        let _ = self.child.wait();
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
