//! Writes the store did not apply, counted for the run's report.
//!
//! A write sent without waiting (`blackboard.set`, `bus.send`) reports its
//! failure when its agent settles it, at a later call (`sleep`, the next
//! read) that a script may wrap in `pcall` and go on: the write is lost all
//! the same. Each one is counted here, whatever the script did with the
//! error, and a run that lost any is not `complete` (the orchestrator adds
//! the entry [`LostWrites::reported`] makes).

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::{ErrorKind, exit};
use crate::report::ReportedError;
use crate::store::Outcome;

/// Why a write whose agent stopped waiting for its answer counts as lost.
pub const UNKNOWN: &str = "not known whether it was applied: its agent stopped waiting for the \
                           answer (an earlier write failed, or the agent was stopped)";

/// Why a settled write is lost work: the store's error, or [`UNKNOWN`];
/// `None` when the store applied it.
pub fn why(outcome: Outcome) -> Option<String> {
    match outcome {
        Outcome::Applied => None,
        Outcome::Failed(e) => Some(e.to_string()),
        Outcome::Unknown => Some(UNKNOWN.to_string()),
    }
}

/// The writes of a run the store refused, or whose outcome is unknown.
#[derive(Default)]
pub struct LostWrites {
    count: AtomicU64,
    /// The first one: what it wrote and why it was lost.
    first: Mutex<Option<(String, String)>>,
}

impl LostWrites {
    /// Counts a lost write: `what` names it (`blackboard key 'k'`), `why`
    /// is the store's error.
    pub fn record(&self, what: impl FnOnce() -> String, why: &str) {
        if self.count.fetch_add(1, Ordering::Relaxed) == 0 {
            *self.first.lock() = Some((what(), why.to_string()));
        }
    }

    /// How many writes were lost.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The report's fatal entry for the lost writes (a Coordination error,
    /// exit 5: the store lost data), `None` when there were none.
    pub fn reported(&self) -> Option<ReportedError> {
        let count = self.count();
        let (what, why) = self.first.lock().clone()?;
        Some(ReportedError {
            agent: "host".into(),
            kind: ErrorKind::Coordination,
            message: format!(
                "coordination: {} not applied by the store, or not known to be (refused, \
                 or no answer before the host gave up), whatever the scripts did with the \
                 errors; the first: {what}: {why}",
                crate::text::plural(count, "write was", "writes were"),
            ),
            fatal: true,
            allowed: false,
            count: 1,
            exit_code: exit::COORDINATION,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::LostWrites;

    /// The entry names how many were lost and the first one, and only
    /// the first one's name is built.
    #[test]
    fn the_entry_counts_the_lost_writes_and_names_the_first() {
        let lost = LostWrites::default();
        assert!(lost.reported().is_none());
        lost.record(|| "blackboard key 'k1'".into(), "OOM");
        lost.record(|| unreachable!("only the first is named"), "OOM");
        let e = lost.reported().unwrap();
        assert!(e.fatal);
        assert_eq!(e.exit_code, crate::error::exit::COORDINATION);
        assert!(
            e.message.contains("2 writes were not applied by the store")
                && e.message.contains("the first: blackboard key 'k1': OOM"),
            "{}",
            e.message
        );
    }
}
