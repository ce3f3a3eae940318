//! Tracks which agents are busy, so the orchestrator can tell when a task has
//! gone quiet: every agent idle, every queue empty.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Busy-agent count plus an epoch that moves on every change.
#[derive(Default)]
pub struct Activity {
    busy: AtomicUsize,
    epoch: AtomicU64,
    changed: Notify,
    moved: Notify,
}

impl Activity {
    /// An agent started working (it was created, or woke up with an event).
    pub fn busy(&self) {
        self.busy.fetch_add(1, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.moved.notify_one();
    }

    /// An agent has nothing to do until an event arrives (or it ended).
    pub fn idle(&self) {
        self.busy.fetch_sub(1, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        // A permit, not a wake-up of current waiters only: an agent going idle
        // while the orchestrator is busy confirming an earlier quiet (or doing
        // anything else) must still trigger a check, or the task never ends.
        self.changed.notify_one();
        self.moved.notify_one();
    }

    /// Agents currently busy.
    pub fn busy_count(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
    }

    /// A counter that changes whenever any agent goes busy or idle.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Waits until some agent went idle since the last call returned (for the
    /// one task that watches for quiet).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Waits until some agent went busy or idle since the last call returned
    /// (a change while nobody waits is kept, so none is missed). For the one
    /// task that publishes this process's activity to other processes.
    pub async fn moved(&self) {
        self.moved.notified().await
    }
}
