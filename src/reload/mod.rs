//! Hot reload: a watcher on the scripts and stdlib directories that checks
//! changed files in isolation and registers the good ones in the
//! [`ScriptRegistry`], where agents pick them up at their next callback
//! boundary (see `agent::reload`).
//!
//! Directories are watched, not files, so editors that save by writing a
//! temporary file and renaming it over the original are seen; their swap,
//! backup and lock files are ignored ([`is_editor_artifact`]). Events are
//! debounced, then each touched path is judged by what is on disk *now*: a
//! file that exists is new code (checked by [`validate::check`] first, skipped
//! when unchanged), a file that is gone was deleted. A watched directory
//! that is deleted, moved away or replaced at its path is noticed too
//! (`roots`): its files count as deleted, or are looked at again in the
//! directory now at the path, which is watched instead.
//!
//! Every outcome is logged under the `orrery::reload` target, counted in the
//! task's `host.reloads` / `host.reload_errors`, and sent as a [`ReloadEvent`]
//! to [`Reloader::subscribe`]rs.

mod apply;
mod roots;
pub mod validate;

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::sync::broadcast;

use crate::coordination::Coordination;
use crate::error::{Error, Result};
pub use crate::scripts::is_editor_artifact;
use crate::scripts::{ScriptKind, ScriptRegistry};

pub use crate::agent::reload::LOG_TARGET;

/// Default quiet time after a file event before the file is read: long enough
/// for an editor's write-and-rename save to finish, short enough to feel instant.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(20);

/// How many reload events a slow subscriber may fall behind before it misses some.
const EVENT_BUFFER: usize = 256;

/// Settings of a [`Reloader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadOptions {
    /// Quiet time after a file event before the file is read.
    pub debounce: Duration,
}

impl Default for ReloadOptions {
    fn default() -> Self {
        ReloadOptions {
            debounce: DEFAULT_DEBOUNCE,
        }
    }
}

/// What happened to one changed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// New code of an existing role or module was registered.
    Updated {
        /// Role or module.
        kind: ScriptKind,
        /// Its name.
        name: String,
        /// The registry version of the new code.
        version: u64,
    },
    /// A new role (now spawnable) or module (now requirable) was registered.
    Added {
        /// Role or module.
        kind: ScriptKind,
        /// Its name.
        name: String,
        /// The registry version of the new code.
        version: u64,
    },
    /// The file was deleted: a role can no longer be spawned, a module no
    /// longer required (its running users keep their code).
    Removed {
        /// Role or module.
        kind: ScriptKind,
        /// Its name.
        name: String,
    },
    /// The new code failed its check; the running code stays.
    Refused {
        /// `path:line: message`, as printed.
        error: String,
    },
}

/// One file's reload, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadEvent {
    /// The file, as the user wrote it (`scripts/beta.lua`).
    pub path: PathBuf,
    /// What happened.
    pub change: Change,
    /// Live agents running the role or having required the module.
    pub agents: Vec<String>,
    /// Time to read, check and register the file.
    pub took: Duration,
    /// Time from the first file event to the registration (includes the debounce).
    pub since_change: Duration,
}

/// Watches the scripts and stdlib directories of a registry while it lives.
pub struct Reloader {
    events: broadcast::Sender<ReloadEvent>,
    /// Tells the reloader's thread to stop (and drop the file watcher).
    inbox: mpsc::Sender<Input>,
}

/// What the reloader's thread waits for.
enum Input {
    /// A debounced batch of file events.
    Batch(DebounceEventResult),
    /// The [`Reloader`] was dropped.
    Stop,
}

impl Reloader {
    /// Starts watching `registry`'s scripts directory and (when it exists) its
    /// stdlib directory for the task of `coord`, whose settings bound the
    /// checks and whose metrics count the reloads. Fails with a BadInput error
    /// naming the directory when it cannot be watched.
    pub fn start(
        registry: Arc<ScriptRegistry>,
        coord: Arc<Coordination>,
        options: ReloadOptions,
    ) -> Result<Reloader> {
        let mut dirs = vec![registry.scripts_dir().to_path_buf()];
        if registry.stdlib_dir().is_dir() {
            dirs.push(registry.stdlib_dir().to_path_buf());
        }
        let (inbox, input) = mpsc::channel();
        let batches = inbox.clone();
        let mut watcher = new_debouncer(
            options.debounce,
            None,
            move |result: DebounceEventResult| {
                let _ = batches.send(Input::Batch(result));
            },
        )
        .map_err(|e| watch_error(&dirs[0], &e))?;
        let roots: Vec<roots::Root> = dirs
            .iter()
            .map(|shown| roots::Root::watch(shown, &mut watcher))
            .collect::<Result<_>>()?;
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let applier = apply::Applier::new(registry, coord, roots, events.clone());
        let runtime = tokio::runtime::Handle::try_current().ok();
        std::thread::Builder::new()
            .name("orrery-reload".to_string())
            .spawn(move || run(watcher, applier, input, runtime))
            .map_err(|e| {
                Error::bad_input(
                    dirs[0].display().to_string(),
                    format!("cannot watch for changes: no thread for the watcher: {e}"),
                )
            })?;
        Ok(Reloader { events, inbox })
    }

    /// Every reload from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ReloadEvent> {
        self.events.subscribe()
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        // The thread ends after the batch it is on, dropping the watcher.
        let _ = self.inbox.send(Input::Stop);
    }
}

/// The reloader's thread: applies each batch of file events, and between
/// batches checks that the watched paths still lead to the watched
/// directories (a directory replaced at its path sends no event).
fn run(
    mut watcher: roots::FileWatcher,
    mut applier: apply::Applier,
    input: mpsc::Receiver<Input>,
    runtime: Option<tokio::runtime::Handle>,
) {
    loop {
        let batch = match input.recv_timeout(roots::CHECK_EVERY) {
            Ok(Input::Batch(result)) => Some(result),
            Ok(Input::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => None,
        };
        // Dead letters are given back on the task's runtime.
        let _guard = runtime.as_ref().map(|r| r.enter());
        applier.handle(batch, &mut watcher);
    }
}

fn watch_error(dir: &Path, e: &notify_debouncer_full::notify::Error) -> Error {
    Error::bad_input(
        dir.display().to_string(),
        format!("cannot watch for changes: {e}"),
    )
}
