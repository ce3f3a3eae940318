//! Reading a task's journal stream from a shared store, in order and
//! without repeats, as `orrery tail` does: what was stored before, then what
//! comes, from every process taking part.

use std::collections::HashMap;
use std::sync::Arc;

use crate::coordination::journal::{Entry, Event};
use crate::error::Result;
use crate::store::Store;

/// Entries read per store round trip.
const BATCH: usize = 1000;

/// A reader of one task's journal stream.
pub struct Follower {
    store: Arc<dyn Store>,
    task: String,
    after: Option<String>,
    /// The last sequence number seen of each host: a line stored twice (a
    /// retried append) is skipped.
    last_seq: HashMap<String, u64>,
    ended: bool,
}

impl Follower {
    /// Reads `task`'s journal in `store` from the oldest entry kept.
    pub fn new(store: Arc<dyn Store>, task: &str) -> Follower {
        Follower {
            store,
            task: task.to_string(),
            after: None,
            last_seq: HashMap::new(),
            ended: false,
        }
    }

    /// The entries stored since the last call (empty when none came), each
    /// with its line as stored. Lines that do not parse are skipped with a
    /// warning.
    pub async fn next(&mut self) -> Result<Vec<(Entry, String)>> {
        let mut out = Vec::new();
        loop {
            let batch = self
                .store
                .journal_read(&self.task, self.after.as_deref(), BATCH)
                .await?;
            let full = batch.len() == BATCH;
            for (position, line) in batch {
                self.after = Some(position);
                let entry = match Entry::parse(&line) {
                    Ok(entry) => entry,
                    Err(e) => {
                        tracing::warn!("journal of task '{}': skipped a line ({e})", self.task);
                        continue;
                    }
                };
                let last = self.last_seq.entry(entry.host.clone()).or_insert(0);
                if entry.seq <= *last {
                    continue;
                }
                *last = entry.seq;
                if matches!(entry.event, Event::RunEnded { owner: true, .. }) {
                    self.ended = true;
                }
                out.push((entry, line));
            }
            if !full {
                return Ok(out);
            }
        }
    }

    /// True once the owner's `run_ended` entry was read: nothing more comes
    /// from the run (but joined processes that are late to stop).
    pub fn run_ended(&self) -> bool {
        self.ended
    }
}
