//! Hot-reload latency: the time from writing a role script to the first
//! message handled by its new code, including the watcher's debounce.
//!
//! A task runs one `echo` agent in watch mode on a scratch directory. Each
//! edit writes a new version of `echo.lua` (alternately in place and as a
//! write-and-rename save), waits for the reloader to register it, sends the
//! agent a message and waits for the answer of the new code.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::orchestrator::Orchestrator;
use crate::reload::{Change, ReloadEvent, ReloadOptions};
use crate::scripts::ScriptRegistry;
use crate::store::{BlackboardEvent, MemoryStore};
use crate::task::Task;

/// Longest one edit may take before the benchmark gives up.
const EDIT_LIMIT: Duration = Duration::from_secs(10);

/// Figures of a reload-latency run, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReloadLatency {
    /// Edits measured.
    pub edits: usize,
    /// The watcher's debounce, included in every figure.
    pub debounce_ms: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Fastest edit.
    pub min_ms: f64,
    /// Slowest edit.
    pub max_ms: f64,
    /// Mean latency.
    pub mean_ms: f64,
}

/// Measures `edits` edits (at least one) of a running agent's script. Fails
/// when the scratch directory cannot be written, or an edit is not handled
/// within 10 s (AgentTimeout).
pub async fn reload_latency(edits: usize) -> Result<ReloadLatency> {
    let edits = edits.max(1);
    let scratch = ScratchDir::new()?;
    let script = scratch.path.join("scripts").join("echo.lua");
    write(&script, &echo(0))?;
    let config = Config {
        scripts: scratch.path.join("scripts"),
        stdlib: scratch.path.join("stdlib"),
        ..Config::default()
    };
    let options = ReloadOptions::default();
    let registry = Arc::new(ScriptRegistry::load(&config.scripts, &config.stdlib)?);
    let task = Task::from_toml(
        "id = \"bench-reload\"\ntype = \"bench\"\ndescription = \"reload latency\"\ntimeout = 3600000\n",
        "bench",
    )?;
    let mut orchestrator = Orchestrator::new(task, config, Arc::new(MemoryStore::new()), registry)?;
    orchestrator.watch(options)?;
    let mut reloads = orchestrator.reload_events().expect("watching");
    let coord = orchestrator.coordination().clone();
    let mut board = coord.blackboard.subscribe().await?;
    let stopper = orchestrator.stopper();
    let run = tokio::spawn(orchestrator.run());

    let ask = |edit: usize| {
        let coord = coord.clone();
        async move {
            coord
                .bus
                .send("bench", "echo", "ping", json!({ "edit": edit }))
                .await
        }
    };
    ask(0).await?;
    answer(&mut board, 0).await?;
    let mut samples = Vec::with_capacity(edits);
    for edit in 1..=edits {
        let started = Instant::now();
        if edit % 2 == 0 {
            write(&script, &echo(edit))?;
        } else {
            let tmp = script.with_extension("lua.tmp");
            write(&tmp, &echo(edit))?;
            std::fs::rename(&tmp, &script).map_err(|e| io_error(&script, e))?;
        }
        registered(&mut reloads, &script, edit).await?;
        ask(edit).await?;
        answer(&mut board, edit).await?;
        samples.push(started.elapsed());
    }
    stopper.stop();
    let _ = run.await;
    Ok(summarise(&samples, options.debounce))
}

/// The role script of edit `edit`: answers each message with its edit number.
fn echo(edit: usize) -> String {
    format!(
        "local M = {{}}\nfunction M.on_message(self, msg)\n  blackboard.set(\"reply\", {{ edit = {edit}, asked = msg.payload.edit }})\nend\nreturn M\n"
    )
}

/// Waits until the reloader registered edit `edit` of `script`.
async fn registered(
    reloads: &mut broadcast::Receiver<ReloadEvent>,
    script: &Path,
    edit: usize,
) -> Result<()> {
    let wait = async {
        loop {
            match reloads.recv().await {
                Ok(ev) if ev.path == script => match ev.change {
                    Change::Updated { .. } => return Ok(()),
                    Change::Refused { error } => return Err(Error::Script { message: error }),
                    _ => {}
                },
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(Error::Coordination("the reloader stopped".into()));
                }
            }
        }
    };
    within(wait, edit).await
}

/// Waits for the answer of edit `edit`'s code.
async fn answer(board: &mut broadcast::Receiver<BlackboardEvent>, edit: usize) -> Result<()> {
    let wait = async {
        loop {
            match board.recv().await {
                Ok(ev) if ev.key == "reply" => {
                    if ev.value.as_ref().and_then(|v| v.get("edit")) == Some(&Value::from(edit)) {
                        return Ok(());
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(Error::Coordination("the blackboard stopped".into()));
                }
            }
        }
    };
    within(wait, edit).await
}

async fn within(wait: impl Future<Output = Result<()>>, edit: usize) -> Result<()> {
    tokio::time::timeout(EDIT_LIMIT, wait)
        .await
        .map_err(|_| Error::AgentTimeout {
            what: format!("reload benchmark edit {edit}"),
            limit_ms: EDIT_LIMIT.as_millis() as u64,
        })?
}

fn summarise(samples: &[Duration], debounce: Duration) -> ReloadLatency {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    // Nearest rank.
    let percentile = |p: f64| ms[((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    // Microseconds are plenty: more digits would only be noise.
    let round = |x: f64| (x * 1e3).round() / 1e3;
    ReloadLatency {
        edits: ms.len(),
        debounce_ms: round(debounce.as_secs_f64() * 1e3),
        p50_ms: round(percentile(0.50)),
        p99_ms: round(percentile(0.99)),
        min_ms: round(ms[0]),
        max_ms: round(ms[ms.len() - 1]),
        mean_ms: round(ms.iter().sum::<f64>() / ms.len() as f64),
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::bad_input(path.display().to_string(), format!("cannot write: {e}"))
}

/// A directory under the system's temporary directory, removed on drop.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn new() -> Result<ScratchDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "orrery-bench-reload-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(path.join("scripts")).map_err(|e| io_error(&path, e))?;
        Ok(ScratchDir { path })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
