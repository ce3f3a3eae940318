//! Tracks which agents are busy, so the orchestrator can tell when a task has
//! gone quiet: every agent idle, every queue empty, no event waiting.
//!
//! "Every agent idle" alone is not enough: a blackboard change can sit in an
//! idle agent's watch stream that the agent has not been scheduled to pick up
//! yet. So the orchestrator confirms with a *probe*: it moves a generation
//! number, and each idle agent answers it only when nothing else is ready for
//! it (an agent's wait prefers events over the probe). An agent that finds an
//! event goes busy instead, which moves the epoch and voids the round.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

/// Busy-agent count, an epoch that moves on every change, and the probe rounds.
pub struct Activity {
    busy: AtomicUsize,
    epoch: AtomicU64,
    /// One waiter (the orchestrator): `notify_one` keeps a permit when it is not
    /// waiting, so a change it was too busy to see is not lost.
    changed: Notify,
    /// Like `changed`, for busy and idle alike (the heartbeat of a shared task).
    moved: Notify,
    probe: watch::Sender<u64>,
    /// (generation, agents that answered it).
    answers: Mutex<(u64, usize)>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            busy: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
            changed: Notify::new(),
            moved: Notify::new(),
            probe: watch::channel(0).0,
            answers: Mutex::new((0, 0)),
        }
    }
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

    /// Waits until some agent goes idle or answers a probe (returns at once if
    /// that happened since the last wait).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Waits until some agent went busy or idle since the last call returned
    /// (a change while nobody waits is kept, so none is missed). For the one
    /// task that publishes this process's activity to other processes.
    pub async fn moved(&self) {
        self.moved.notified().await
    }

    /// Starts a probe round; returns its generation.
    pub fn probe(&self) -> u64 {
        let mut answers = self.answers.lock();
        let generation = answers.0 + 1;
        *answers = (generation, 0);
        self.probe.send_replace(generation);
        generation
    }

    /// What an agent watches for probes.
    pub fn probe_receiver(&self) -> watch::Receiver<u64> {
        self.probe.subscribe()
    }

    /// An idle agent with nothing ready answers probe `generation`.
    pub fn answer(&self, generation: u64) {
        let mut answers = self.answers.lock();
        if answers.0 == generation {
            answers.1 += 1;
            drop(answers);
            self.changed.notify_one();
        }
    }

    /// How many agents answered probe `generation` (0 once a newer round started).
    pub fn answers(&self, generation: u64) -> usize {
        let answers = self.answers.lock();
        if answers.0 == generation {
            answers.1
        } else {
            0
        }
    }
}
