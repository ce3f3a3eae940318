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
    /// The entries this sink could not take, and why (its first failure),
    /// for the run's report; `None` when it took every one.
    fn loss(&self) -> Option<SinkLoss> {
        None
    }
}

/// Entries a sink could not take (a full disk, a store gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkLoss {
    /// How many.
    pub entries: u64,
    /// The sink and its first failure (`journal file run.jsonl: cannot
    /// write (No space left on device)`).
    pub why: String,
}

/// Writes the journal as JSON Lines to a file, a batch at a time (so
/// `tail -f` follows it within [`FLUSH_EVERY`](super::FLUSH_EVERY)). No
/// buffer of its own: a batch is already one text, and copying it into one
/// before the kernel copies it was a copy too many.
pub struct FileSink {
    path: PathBuf,
    out: Option<File>,
    /// Bytes written: where the last whole line ends.
    written: u64,
    loss: Option<SinkLoss>,
}

impl FileSink {
    /// Creates (or truncates) `path`; `flag` names where the path came from
    /// for the error (`flag --journal`), a BadInput naming the file.
    pub fn create(path: &Path, flag: &str) -> Result<FileSink> {
        use std::os::unix::fs::OpenOptionsExt;
        // Not blocking: a pipe (`--journal /dev/stdout | reader`, a FIFO)
        // whose reader stops reading must not hold the run (see `write`).
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| {
                let why = if e.raw_os_error() == Some(libc::ENXIO) {
                    "a pipe no program reads".to_string()
                } else {
                    e.to_string()
                };
                Error::bad_input(
                    format!("{flag} {}", path.display()),
                    format!("cannot create the journal file: {why}"),
                )
            })?;
        Ok(FileSink {
            path: path.to_path_buf(),
            out: Some(file),
            written: 0,
            loss: None,
        })
    }

    /// The file cannot take `batch` (`e`): it is cut back to its last whole
    /// line, so what it holds stays readable (`orrery report`), and takes
    /// nothing more; the entries it misses are counted for the report.
    fn fail(&mut self, e: std::io::Error, batch: &Batch) {
        let why = format!("journal file {}: cannot write ({e})", self.path.display());
        tracing::error!("{why}; no more entries go to it");
        if let Some(out) = self.out.take() {
            // Best effort: cutting a file frees room, even on a full disk.
            let _ = out.set_len(self.written);
        }
        // Called once: nothing more is written after it.
        self.loss = Some(SinkLoss {
            entries: batch.len() as u64,
            why,
        });
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn write(&mut self, batch: &Batch) {
        let Some(out) = self.out.as_mut() else {
            // Given up after a failure (closed, nothing more is written).
            if let Some(loss) = &mut self.loss {
                loss.entries += batch.len() as u64;
            }
            return;
        };
        match write_patiently(out, batch.text().as_bytes()).await {
            Ok(()) => self.written += batch.text().len() as u64,
            Err(e) => self.fail(e, batch),
        }
    }

    async fn close(&mut self) {
        self.out = None;
    }

    fn loss(&self) -> Option<SinkLoss> {
        self.loss.clone()
    }
}

/// How long a journal pipe may take nothing before it is given up.
const STALL: std::time::Duration = std::time::Duration::from_secs(5);

/// Writes `bytes` to `out` (opened without blocking), waiting without
/// holding a thread while a pipe is full; fails once its reader has taken
/// nothing for [`STALL`] (a reader that stopped: the journal writer was
/// stuck in a blocking write, and the run could not end, nor be stopped).
async fn write_patiently(out: &mut File, mut bytes: &[u8]) -> std::io::Result<()> {
    use std::io::ErrorKind;
    let mut stalled_since = None;
    while !bytes.is_empty() {
        match out.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => {
                bytes = &bytes[n..];
                stalled_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let since = *stalled_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= STALL {
                    return Err(std::io::Error::new(
                        ErrorKind::TimedOut,
                        format!("its reader took nothing for {} s", STALL.as_secs()),
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
            // Said once per failing stretch: the run goes on without it. Not
            // a loss of the report's: the store's failures are the run's
            // errors already, and the stream is a copy for `orrery tail`.
            Err(e) => {
                if !self.failing {
                    self.failing = true;
                    tracing::warn!("journal: {} entries not stored: {e}", lines.len());
                }
            }
        }
    }
}
