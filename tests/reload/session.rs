//! A task running in-process on a scratch directory, with hot reload on or
//! off, and ways to talk to its agents and await what they and the reloader do.
//!
//! Agents in these tests answer a message carrying `seq` by writing
//! `reply/<seq>` on the blackboard; [`Session::ask`] sends one and awaits that
//! key, so every observation is an awaited event, never a sleep.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use orrery::config::Config;
use orrery::coordination::Coordination;
use orrery::orchestrator::{Orchestrator, Stopper};
use orrery::reload::{Change, ReloadEvent, ReloadOptions};
use orrery::report::RunReport;
use orrery::scripts::ScriptRegistry;
use orrery::store::BlackboardEvent;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::common::{Scratch, task};

/// A role script answering every message with `{version, count}` at
/// `reply/<seq>`, counting messages in its state.
pub fn echo(version: &str) -> String {
    format!(
        r#"local M = {{}}
M.VERSION = "{version}"
function M.start(self) self.count = 0 end
function M.on_message(self, msg)
  self.count = self.count + 1
  blackboard.set("reply/" .. msg.payload.seq, {{ version = M.VERSION, count = self.count }})
end
return M
"#
    )
}

/// Longest any awaited event may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// One running task.
pub struct Session {
    /// The scratch directory holding `scripts/` and `stdlib/`.
    pub root: PathBuf,
    _scratch: Option<Scratch>,
    pub coord: Arc<Coordination>,
    pub registry: Arc<ScriptRegistry>,
    reloads: Option<broadcast::Receiver<ReloadEvent>>,
    board: broadcast::Receiver<BlackboardEvent>,
    /// Blackboard writes seen while waiting for another key.
    seen: BTreeMap<String, Value>,
    stopper: Stopper,
    run: JoinHandle<RunReport>,
    seq: u64,
}

impl Session {
    /// Writes `files` (paths relative to the scratch root: `scripts/echo.lua`,
    /// `stdlib/greet.lua`) and starts a task with every role, watching when `watch`.
    pub async fn start(files: &[(&str, &str)], watch: bool) -> Session {
        Session::start_after(files, watch, |_| {}).await
    }

    /// As [`start`](Self::start), running `prepare` on the scratch root
    /// (symbolic links, say) between writing the files and starting the task.
    pub async fn start_after(
        files: &[(&str, &str)],
        watch: bool,
        prepare: impl FnOnce(&Path),
    ) -> Session {
        let scratch = Scratch::new(&[]);
        std::fs::create_dir_all(scratch.path().join("stdlib")).unwrap();
        for (rel, text) in files {
            scratch.write(rel, text);
        }
        prepare(scratch.path());
        let mut session = Session::start_on(scratch.path(), watch).await;
        session._scratch = Some(scratch);
        session
    }

    /// Starts a second task on the files of `root` (another session's), with
    /// its own registry and store.
    pub async fn start_on(root: &Path, watch: bool) -> Session {
        let config = Config {
            scripts: root.join("scripts"),
            stdlib: root.join("stdlib"),
            // Bounds the check of a chunk that never returns.
            callback_timeout: 1000,
            ..Config::default()
        };
        let registry =
            Arc::new(ScriptRegistry::load(&config.scripts, &config.stdlib).expect("scripts load"));
        let store = orrery::store::open(
            &config.store,
            std::time::Duration::from_millis(config.connect_timeout),
        )
        .await
        .expect("store opens");
        let mut orchestrator =
            Orchestrator::new(task("reload-test", 60_000), config, store, registry.clone())
                .expect("task accepted");
        if watch {
            orchestrator
                .watch(ReloadOptions::default())
                .expect("directories watched");
        }
        let reloads = orchestrator.reload_events();
        let coord = orchestrator.coordination().clone();
        let board = coord
            .blackboard
            .subscribe()
            .await
            .expect("blackboard events");
        let stopper = orchestrator.stopper();
        let run = tokio::spawn(async move { orchestrator.run().await.expect("task runs") });
        Session {
            root: root.to_path_buf(),
            _scratch: None,
            coord,
            registry,
            reloads,
            board,
            seen: BTreeMap::new(),
            stopper,
            run,
            seq: 0,
        }
    }

    /// True when the session has no reload events: it does not watch.
    pub fn reload_events_absent(&self) -> bool {
        self.reloads.is_none()
    }

    /// Absolute path of a file of the scratch directory.
    pub fn file(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Saves `text` to `rel` as most editors do: write a temporary file beside
    /// it, then rename it over the original.
    pub fn save(&self, rel: &str, text: &str) {
        let path = self.file(rel);
        let tmp = path.with_file_name(format!(
            "{}.tmp",
            path.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    /// Sends a message from the test to `to` (an agent id or a role).
    pub async fn send(&self, to: &str, kind: &str, payload: Value) {
        self.coord
            .bus
            .send("test", to, kind, payload)
            .await
            .expect("message sent");
    }

    /// Sends `kind` with a fresh `seq` (merged into `payload`) to `to` and
    /// returns what the agent wrote at `reply/<seq>`.
    pub async fn ask(&mut self, to: &str, kind: &str, payload: Value) -> Value {
        self.seq += 1;
        let seq = self.seq;
        let mut payload = payload;
        payload
            .as_object_mut()
            .expect("payload is an object")
            .insert("seq".into(), json!(seq));
        self.send(to, kind, payload).await;
        self.board_value(&format!("reply/{seq}")).await
    }

    /// Awaits a write of blackboard key `key` (made since the session started
    /// and not yet returned) and returns the value.
    pub async fn board_value(&mut self, key: &str) -> Value {
        if let Some(value) = self.seen.remove(key) {
            return value;
        }
        let (board, seen) = (&mut self.board, &mut self.seen);
        let wait = async {
            loop {
                match board.recv().await {
                    Ok(ev) if ev.key == key => return ev.value.unwrap_or(Value::Null),
                    Ok(ev) => {
                        seen.insert(ev.key, ev.value.unwrap_or(Value::Null));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(e) => panic!("blackboard events ended while waiting for {key}: {e}"),
                }
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("no write of blackboard key '{key}' within {PATIENCE:?}"))
    }

    /// Awaits the next reload event about the file `rel`, skipping others.
    pub async fn reload_of(&mut self, rel: &str) -> ReloadEvent {
        let path = self.file(rel);
        let reloads = self.reloads.as_mut().expect("session watches");
        let wait = async {
            loop {
                match reloads.recv().await {
                    Ok(ev) if ev.path == path => return ev,
                    Ok(_) => {}
                    Err(e) => panic!("reload events ended while waiting for {rel}: {e}"),
                }
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("no reload of {rel} within {PATIENCE:?}"))
    }

    /// Awaits the next reload event, whatever its file.
    pub async fn next_reload(&mut self) -> ReloadEvent {
        let reloads = self.reloads.as_mut().expect("session watches");
        tokio::time::timeout(PATIENCE, reloads.recv())
            .await
            .expect("a reload event in time")
            .expect("reload events open")
    }

    /// Awaits a successful reload of `rel` and returns it; fails on any other outcome.
    pub async fn reloaded(&mut self, rel: &str) -> ReloadEvent {
        let event = self.reload_of(rel).await;
        assert!(
            matches!(event.change, Change::Updated { .. } | Change::Added { .. }),
            "expected {rel} to be reloaded, got {event:?}"
        );
        event
    }

    /// The host counter `name` (`reloads`, `reload_errors`).
    pub fn host_counter(&self, name: &str) -> u64 {
        let host = &self.coord.metrics.host;
        let counter = match name {
            "reloads" => &host.reloads,
            "reload_errors" => &host.reload_errors,
            other => panic!("no host counter {other} in these tests"),
        };
        counter.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the run (as Ctrl-C does) and returns its report.
    pub async fn stop(self) -> RunReport {
        self.stopper.stop();
        tokio::time::timeout(PATIENCE, self.run)
            .await
            .expect("the run ends after a stop")
            .expect("the run task does not panic")
    }
}
