//! Telling when a task has gone quiet: every agent idle (in every process
//! taking part), no spawn pending, no message waiting, and no blackboard
//! change still on its way to a watcher, and all of that stable for a moment.

use std::time::Duration;

use super::Orchestrator;

/// How long the task must stay quiet (every agent idle, no message queued)
/// before it is considered done.
const QUIET_CONFIRM: Duration = Duration::from_millis(5);

/// The same when other processes take part: their activity reaches us
/// through the store, so allow for a few round trips.
const QUIET_CONFIRM_SHARED: Duration = Duration::from_millis(100);

/// How often the owner looks for quiet while other processes take part
/// (their agents going idle does not wake this process).
pub(super) const QUIET_POLL: Duration = Duration::from_millis(100);

/// Busy agents and activity epoch of each other live process, sorted by host.
type RemoteActivity = Vec<(String, usize, u64)>;

impl Orchestrator {
    /// True when every agent is idle, no spawn is pending and no message is queued,
    /// and that stays so for a moment (a woken agent moves the epoch). With
    /// other processes taking part, their agents must be idle too.
    pub(super) async fn is_quiet(&self) -> bool {
        let activity = &self.coord.activity;
        if activity.busy_count() != 0 || !self.spawn_rx.is_empty() {
            return false;
        }
        let epoch = activity.epoch();
        let remote = match self.remote_activity().await {
            Some(r) if r.iter().all(|(_, busy, _)| *busy == 0) => r,
            _ => return false,
        };
        if !self.settled().await {
            return false;
        }
        let confirm = if remote.is_empty() {
            QUIET_CONFIRM
        } else {
            QUIET_CONFIRM_SHARED
        };
        tokio::time::sleep(confirm).await;
        let still =
            activity.busy_count() == 0 && activity.epoch() == epoch && self.spawn_rx.is_empty();
        if !still || remote.is_empty() {
            return still;
        }
        self.remote_activity().await == Some(remote) && self.settled().await
    }

    /// No message waits anywhere and no blackboard change of ours is still on
    /// its way to a watcher.
    async fn settled(&self) -> bool {
        let store = &self.coord.store;
        store.events_in_flight(&self.coord.task.id) == 0
            && matches!(self.coord.bus.is_drained().await, Ok(true))
    }

    /// Busy count and epoch of every other live process; `None` when the
    /// store could not tell (then the task is not considered quiet).
    async fn remote_activity(&self) -> Option<RemoteActivity> {
        if !self.shared {
            return Some(Vec::new());
        }
        let mut others: RemoteActivity = self
            .coord
            .presence
            .others()
            .await
            .ok()?
            .into_iter()
            .map(|h| (h.id, h.busy, h.epoch))
            .collect();
        others.sort();
        Some(others)
    }
}
