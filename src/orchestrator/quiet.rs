//! Telling when a task has gone quiet: every agent idle (in every process
//! taking part), no spawn pending, no message waiting, and no blackboard
//! change still on its way to a watcher, and all of that stable for a moment.

use std::time::Duration;

use super::Orchestrator;

/// The same when other processes take part: their activity reaches us
/// through the store, so allow for a few round trips.
const QUIET_CONFIRM_SHARED: Duration = Duration::from_millis(100);

/// How often the owner looks for quiet while other processes take part
/// (their agents going idle does not wake this process).
pub(super) const QUIET_POLL: Duration = Duration::from_millis(100);

/// Busy agents and activity epoch of each other live process, sorted by host.
pub(super) type RemoteActivity = Vec<(String, usize, u64)>;

impl Orchestrator {
    /// True once the task has gone quiet: every agent idle (in every process
    /// taking part), no spawn pending, no message queued or in flight, and
    /// every local agent answered a probe round during which none of them woke
    /// up (so no blackboard change was waiting for one). Starts a probe round
    /// when the rest holds and none is running. With other processes, their
    /// activity must also stay the same for a few store round trips.
    pub(super) async fn is_quiet(&mut self) -> bool {
        if !self.remote_roles_served().await {
            return false;
        }
        if let Some(not_before) = self.quiet_not_before {
            // The server lost the task's data: the other processes' records
            // (their busy agents) come back with their next heartbeats.
            if tokio::time::Instant::now() < not_before {
                return false;
            }
            self.quiet_not_before = None;
        }
        let activity = &self.coord.activity;
        let local = activity.busy_count() == 0 && self.agents.pending() == 0;
        let remote = match local {
            true => self.remote_activity().await,
            false => None,
        };
        let remote = match remote {
            Some(r) if r.iter().all(|(_, busy, _)| *busy == 0) && self.settled().await => r,
            _ => {
                self.probe = None;
                return false;
            }
        };
        let activity = &self.coord.activity;
        match &self.probe {
            Some((generation, epoch, seen)) if activity.epoch() == *epoch && *seen == remote => {
                if activity.answers(*generation) < self.agents.len() {
                    return false;
                }
                if remote.is_empty() {
                    return true;
                }
                tokio::time::sleep(QUIET_CONFIRM_SHARED).await;
                activity.epoch() == *epoch
                    && self.remote_activity().await == Some(remote)
                    && self.settled().await
            }
            _ => {
                let epoch = activity.epoch();
                self.probe = Some((activity.probe(), epoch, remote));
                false
            }
        }
    }

    /// No message waits anywhere and no blackboard change of ours is still on
    /// its way to a watcher.
    async fn settled(&self) -> bool {
        let store = &self.coord.store;
        store.events_in_flight(&self.coord.task.id) == 0
            && matches!(self.coord.bus.is_drained().await, Ok(true))
    }

    /// Busy count and epoch of every other live process; `None` when the
    /// store could not tell (then the task is not considered quiet). A
    /// process that looked alone looks again: one may have joined since
    /// (a worker's producer joining a spread task, or adopting a lost
    /// worker's agent, had the task end under it before its first send
    /// while the flag waited for the next heartbeat).
    async fn remote_activity(&mut self) -> Option<RemoteActivity> {
        if !self.shared {
            self.refresh_shared().await;
        }
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
