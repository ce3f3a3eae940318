//! Where journal entries go: the [`Sink`] trait, a JSON Lines file
//! ([`FileSink`], `--journal FILE`) and the task's capped stream in a shared
//! store ([`StoreSink`]). The live view and the metrics endpoint are sinks
//! of their own (`crate::observe`).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::Batch;
use crate::error::{Error, Result};
use crate::store::Store;

/// A consumer of journal entries. Called from the journal's writer task,
/// one batch at a time, in sequence order; a sink handles its own failures
/// (it must not stop the run).
#[async_trait]
pub trait Sink: Send {
    /// Takes the next entries.
    async fn write(&mut self, batch: &Batch);
    /// The journal closes: flush and let go of what is held.
    async fn close(&mut self) {}
}

/// Writes the journal as JSON Lines to a file, a batch at a time (so
/// `tail -f` follows it within [`FLUSH_EVERY`](super::FLUSH_EVERY)). No
/// buffer of its own: a batch is already one text, and copying it into one
/// before the kernel copies it was a copy too many.
pub struct FileSink {
    path: PathBuf,
    out: Option<File>,
}

impl FileSink {
    /// Creates (or truncates) `path`; `flag` names where the path came from
    /// for the error (`flag --journal`), a BadInput naming the file.
    pub fn create(path: &Path, flag: &str) -> Result<FileSink> {
        let file = File::create(path).map_err(|e| {
            Error::bad_input(
                format!("{flag} {}", path.display()),
                format!("cannot create the journal file: {e}"),
            )
        })?;
        Ok(FileSink {
            path: path.to_path_buf(),
            out: Some(file),
        })
    }

    fn fail(&mut self, e: std::io::Error) {
        tracing::error!(
            "journal {}: cannot write ({e}); no more entries go to it",
            self.path.display()
        );
        self.out = None;
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn write(&mut self, batch: &Batch) {
        let Some(out) = self.out.as_mut() else { return };
        if let Err(e) = out.write_all(batch.text().as_bytes()) {
            self.fail(e);
        }
    }

    async fn close(&mut self) {
        self.out = None;
    }
}

/// Appends the journal to the task's capped stream in a shared store
/// (`task:{id}:journal`), where `orrery tail` reads it from any host.
pub struct StoreSink {
    store: Arc<dyn Store>,
    task: String,
    max_len: usize,
    failing: bool,
}

impl StoreSink {
    /// The stream of `task` in `store`, trimmed to about `max_len` entries.
    pub fn new(store: Arc<dyn Store>, task: &str, max_len: usize) -> StoreSink {
        StoreSink {
            store,
            task: task.to_string(),
            max_len,
            failing: false,
        }
    }
}

#[async_trait]
impl Sink for StoreSink {
    async fn write(&mut self, batch: &Batch) {
        let lines: Vec<&str> = batch.lines().collect();
        match self
            .store
            .journal_append(&self.task, &lines, self.max_len)
            .await
        {
            Ok(()) => self.failing = false,
            // Said once per failing stretch: the run goes on without it.
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!("journal: {} entries not stored: {e}", lines.len());
            }
            Err(_) => {}
        }
    }
}
