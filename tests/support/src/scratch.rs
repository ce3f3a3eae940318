//! Scratch script directories, small tasks, and runs of a task in-process
//! on either store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use orrery::config::Config;
use orrery::orchestrator::Orchestrator;
use orrery::report::RunReport;
use orrery::scripts::ScriptRegistry;
use orrery::task::Task;

use crate::RedisServer;

/// The repository root (where `scripts/`, `stdlib/` and `examples/` are).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/support sits two levels below the repository root")
        .to_path_buf()
}

/// A scratch directory with a `scripts/` folder filled from `(name, source)` pairs.
pub struct Scratch {
    /// The directory, removed on drop.
    pub dir: tempfile::TempDir,
}

impl Scratch {
    /// A new directory holding `scripts/<name>` for each pair.
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

    /// The scratch root.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Its `scripts/` folder.
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
    /// The embedded store.
    Memory,
    /// A real `redis-server` started by the test.
    Redis,
}

impl Backend {
    /// Every backend the parametrised suite covers.
    pub fn all() -> Vec<Backend> {
        vec![Backend::Memory, Backend::Redis]
    }
}

/// Runs `task` in-process with the scripts of `scripts_dir` on `backend`
/// (a server of its own for Redis, stopped when the run ends).
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
    let store = orrery::store::open(
        &config.store,
        std::time::Duration::from_millis(config.connect_timeout),
    )
    .await
    .expect("store opens");
    Orchestrator::new(task, config, store, registry)
        .expect("task accepted")
        .run()
        .await
        .expect("task runs")
}
