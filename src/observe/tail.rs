//! Reading a task's journal stream from a shared store, in order and
//! without repeats, as `orrery tail` does: what was stored before, then what
//! comes, from every process taking part.

use std::collections::{HashMap, HashSet};
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
    /// Processes whose start and whose end were read.
    started: HashSet<String>,
    finished: HashSet<String>,
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
            started: HashSet::new(),
            finished: HashSet::new(),
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
            // `BATCH` entries hold at least as many lines: read on.
            let full = batch.len() >= BATCH;
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
                match &entry.event {
                    Event::RunStarted { .. } => {
                        self.started.insert(entry.host.clone());
                    }
                    Event::RunEnded { owner, .. } => {
                        self.finished.insert(entry.host.clone());
                        self.ended |= *owner;
                    }
                    _ => {}
                }
                out.push((entry, line));
            }
            if !full {
                return Ok(out);
            }
        }
    }

    /// True once the owner's `run_ended` entry was read: the run is over
    /// (joined processes may still be storing their last entries, see
    /// [`all_ended`](Self::all_ended)).
    pub fn run_ended(&self) -> bool {
        self.ended
    }

    /// True once every process whose start was read has also ended.
    pub fn all_ended(&self) -> bool {
        self.ended && self.started.is_subset(&self.finished)
    }
}
