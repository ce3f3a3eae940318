//! The watched directories themselves: a scripts or stdlib directory can be
//! deleted, moved away, replaced by a copy or, when it is a symbolic link,
//! pointed elsewhere while the task runs.
//!
//! The file watcher follows directories, not paths (inotify watches an inode):
//! it goes silent when the directory is deleted, follows it when it is moved
//! (and reports its events under the old path), and never sees a new
//! directory put at the path. So each [`Root`] remembers which directory it
//! watches (device and inode) and [`Root::follow`] checks, on every batch of
//! events and at least every [`CHECK_EVERY`], that its path still leads
//! there. When it does not, the old directory is no longer watched, the one
//! now at the path (if any) is, and the reloader looks again at every file
//! it knew below the path and every file now there.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify_debouncer_full::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{Debouncer, RecommendedCache};

use super::LOG_TARGET;
use crate::error::{Error, Result};

/// The file watcher the reloader drives.
pub(super) type FileWatcher = Debouncer<RecommendedWatcher, RecommendedCache>;

/// Longest a watched directory can be replaced (or its symbolic link
/// pointed elsewhere) without the reloader noticing, when no file event
/// comes to say so sooner.
pub(super) const CHECK_EVERY: Duration = Duration::from_millis(250);

/// Which directory a path leads to: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirId {
    dev: u64,
    ino: u64,
}

/// A watched directory: as the user wrote it (for messages and the
/// registry), and the directory it leads to while that one is watched.
#[derive(Debug)]
pub(super) struct Root {
    /// The directory as the user wrote it.
    pub shown: PathBuf,
    /// The canonical path the watcher reports events under, while watched.
    pub watched: Option<PathBuf>,
    /// The directory last found at `shown` (watched, or that could not be).
    seen: Option<DirId>,
}

impl Root {
    /// Starts watching `shown`. Fails with a BadInput error naming it when it
    /// is not a directory that can be watched.
    pub fn watch(shown: &Path, watcher: &mut FileWatcher) -> Result<Root> {
        let fail = |why: String| {
            Error::bad_input(
                shown.display().to_string(),
                format!("cannot watch for changes: {why}"),
            )
        };
        let (canonical, id) = resolve(shown).map_err(|e| fail(e.to_string()))?;
        watcher
            .watch(&canonical, RecursiveMode::Recursive)
            .map_err(|e| fail(e.to_string()))?;
        Ok(Root {
            shown: shown.to_path_buf(),
            watched: Some(canonical),
            seen: Some(id),
        })
    }

    /// `path` (as the watcher reports it) as the user would write it, when it
    /// is below this root's watched directory.
    pub fn shown_path(&self, path: &Path) -> Option<PathBuf> {
        let rel = path.strip_prefix(self.watched.as_ref()?).ok()?;
        Some(self.shown.join(rel))
    }

    /// Checks that the path still leads to the watched directory; when it
    /// does not, stops watching that one and watches the directory now at the
    /// path, if there is one. True when the directory changed: every file the
    /// reloader knew below the path is to be looked at again, and the events
    /// the watcher reported under it until now may come from the old one.
    pub fn follow(&mut self, watcher: &mut FileWatcher) -> bool {
        let now = resolve(&self.shown).ok();
        if now.as_ref().map(|(_, id)| *id) == self.seen {
            return false;
        }
        let old = self.watched.take();
        if let Some(old) = &old {
            // Fails when the watcher already dropped a deleted directory: nothing to undo.
            let _ = watcher.unwatch(old);
        }
        let shown = self.shown.display();
        let Some((canonical, id)) = now else {
            tracing::warn!(
                target: LOG_TARGET,
                "{shown} is gone: the files it held count as deleted; watching for it to come back"
            );
            self.seen = None;
            return true;
        };
        let what = match (&self.seen, &old) {
            (None, _) => format!("{shown} is back"),
            (Some(_), Some(old)) if *old == canonical => {
                format!("{shown} was replaced by another directory")
            }
            (Some(_), _) => format!("{shown} leads to {} now", canonical.display()),
        };
        self.seen = Some(id);
        match watcher.watch(&canonical, RecursiveMode::Recursive) {
            Ok(()) => {
                tracing::info!(
                    target: LOG_TARGET,
                    "{what}: watching it, and looking at every file in it"
                );
                self.watched = Some(canonical);
            }
            Err(e) => tracing::warn!(
                target: LOG_TARGET,
                "{what}, but it cannot be watched: {e}; its files are read once, later changes are not seen"
            ),
        }
        true
    }
}

/// The canonical path of the directory `shown` leads to, and which directory
/// it is.
fn resolve(shown: &Path) -> std::io::Result<(PathBuf, DirId)> {
    let canonical = shown.canonicalize()?;
    let meta = std::fs::metadata(&canonical)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other("not a directory"));
    }
    let id = DirId {
        dev: meta.dev(),
        ino: meta.ino(),
    };
    Ok((canonical, id))
}
