//! The processes sharing a task: this process's heartbeat and activity in the
//! store, the liveness of the others, and recovering the agents of one that
//! died (their unacknowledged messages go back to their queues).
//!
//! One process owns a task (`orrery run TASK`): it decides when the task ends
//! and records that in the store. Others join it (`orrery run --join`) and
//! stop when the owner records the end. Each writes a heartbeat every
//! `heartbeat_interval`, and its busy-agent count whenever that changes, so the
//! owner can tell when every process has gone quiet.

use std::sync::Arc;
use std::time::Duration;

use super::state::is_live;
use super::{Activity, AgentPhase, AgentStateManager, MessageBus, now_ms};
use crate::error::{Error, Result};
use crate::store::{HostRecord, HostRole, HostState, Store, StoreError};

/// A process that missed this many heartbeats in a row is lost.
pub const LOST_AFTER_BEATS: u64 = 5;

/// An agent of a lost process, recovered by the owner.
#[derive(Debug, Clone)]
pub struct LostAgent {
    /// Agent id.
    pub id: String,
    /// The process it ran in.
    pub host: String,
    /// Messages it held that went back to their queues.
    pub released: usize,
}

/// This process's part in a task.
pub struct Presence {
    store: Arc<dyn Store>,
    task: String,
    host: String,
    interval: Duration,
}

impl Presence {
    pub(super) fn new(store: Arc<dyn Store>, task: &str, interval: Duration) -> Self {
        Presence {
            store,
            task: task.to_string(),
            host: host_id(),
            interval,
        }
    }

    /// This process's id in the task: `hostname:pid-xxxx`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// How often heartbeats are written.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Joins the task as a new member (see [`Store::member_join`]); returns
    /// the member's epoch.
    pub async fn join(&self) -> Result<u64> {
        Ok(self.store.member_join(&self.task, &self.host).await?)
    }

    /// The error of this process once it is fenced, naming the loss limit
    /// of the process that fenced it as that one recorded it in this
    /// process's record (this process's own limit may differ: each process
    /// has its own `heartbeat_interval`). The fencer writes the record just
    /// after the fence, so a process that looks in between finds no limit
    /// and its error names none: no number rather than a wrong one.
    pub async fn fenced(&self) -> Error {
        let lost_after_ms = match self.store.host_list(&self.task).await {
            Ok(hosts) => hosts
                .into_iter()
                .find(|h| h.id == self.host && h.state == HostState::Lost)
                .and_then(|h| h.lost_after_ms),
            Err(_) => None,
        };
        Error::Fenced {
            task: self.task.clone(),
            host: self.host.clone(),
            lost_after_ms,
        }
    }

    /// Writes this process's heartbeat: its `role`, its `state` (alive, or
    /// left at its end), its activity, and the heartbeat of its `agents`.
    /// [`Error::Fenced`] when this process was declared lost; false when the
    /// server lost the task's data (the caller joins again).
    pub async fn beat(
        &self,
        role: HostRole,
        state: HostState,
        activity: &Activity,
        agents: &[String],
    ) -> Result<bool> {
        let record = HostRecord {
            id: self.host.clone(),
            role,
            state,
            heartbeat_ms: now_ms(),
            busy: activity.busy_count(),
            epoch: activity.epoch(),
            lost_after_ms: None,
        };
        match self.store.heartbeat(&self.task, &record, agents).await {
            Ok(kept) => Ok(kept),
            Err(StoreError::Fenced { .. }) => Err(self.fenced().await),
            Err(e) => Err(e.into()),
        }
    }

    /// True when `host` has beaten recently and has not left.
    pub fn is_alive(&self, host: &HostRecord, now_ms: u64) -> bool {
        let silence = now_ms.saturating_sub(host.heartbeat_ms);
        host.state == HostState::Alive && silence <= self.lost_after_ms()
    }

    fn lost_after_ms(&self) -> u64 {
        self.interval.as_millis() as u64 * LOST_AFTER_BEATS
    }

    /// The other processes of the task that are alive now.
    pub async fn others(&self) -> Result<Vec<HostRecord>> {
        let now = now_ms();
        Ok(self
            .store
            .host_list(&self.task)
            .await?
            .into_iter()
            .filter(|h| self.is_other_alive(h, now))
            .collect())
    }

    /// True when `host` is another process than this one, alive at `now_ms`.
    pub fn is_other_alive(&self, host: &HostRecord, now_ms: u64) -> bool {
        host.id != self.host && self.is_alive(host, now_ms)
    }

    /// True when an agent of another live process has not ended yet.
    pub async fn remote_agents_running(&self, states: &AgentStateManager) -> Result<bool> {
        let others = self.others().await?;
        if others.is_empty() {
            return Ok(false);
        }
        Ok(states
            .list()
            .await?
            .iter()
            .any(|a| others.iter().any(|h| h.id == a.host) && is_live(a)))
    }

    /// Finds processes that stopped heartbeating, fences them (once, even
    /// with several processes looking: the one whose DEL removed the member
    /// key), marks them lost, fails their running agents and gives back the
    /// messages those agents held. Messages a fenced process took after its
    /// fence (it read before it noticed) are given back at every later look.
    ///
    /// With `keep`, the running agents are not failed: their records stay
    /// as they were (phase, queue, checkpoint) for another process to
    /// adopt (a fleet's worker, see `Orchestrator::adopt`); the messages
    /// they held are given back all the same, for the adopter.
    pub async fn reap(
        &self,
        states: &AgentStateManager,
        bus: &MessageBus,
        keep: bool,
    ) -> Result<Vec<LostAgent>> {
        let now = now_ms();
        let silent: Vec<HostRecord> = self
            .store
            .host_list(&self.task)
            .await?
            .into_iter()
            .filter(|h| h.id != self.host && h.state != HostState::Left && !self.is_alive(h, now))
            .collect();
        let mut lost = Vec::new();
        for mut host in silent {
            if host.state == HostState::Lost {
                for agent in states.list().await? {
                    if agent.host == host.id {
                        bus.release(&agent.id).await?;
                    }
                }
                continue;
            }
            if !self.store.member_fence(&self.task, &host.id).await? {
                continue;
            }
            let silence = now.saturating_sub(host.heartbeat_ms);
            host.state = HostState::Lost;
            host.lost_after_ms = Some(self.lost_after_ms());
            self.store.heartbeat(&self.task, &host, &[]).await?;
            for agent in states.list().await? {
                if agent.host != host.id || !is_live(&agent) {
                    continue;
                }
                let reason = format!(
                    "lost: its process {} stopped heartbeating ({silence} ms without a beat)",
                    host.id
                );
                if !keep {
                    states
                        .transition(&agent.id, AgentPhase::Failed, Some(reason))
                        .await?;
                }
                let released = bus.release(&agent.id).await?;
                lost.push(LostAgent {
                    id: agent.id,
                    host: host.id.clone(),
                    released,
                });
            }
        }
        Ok(lost)
    }
}

/// `hostname:pid-xxxx`: unique per process, and per orchestrator within one.
fn host_id() -> String {
    format!(
        "{}:{}-{:04x}",
        hostname(),
        std::process::id(),
        rand::random::<u16>()
    )
}

/// This machine's name: `HOSTNAME`, else `/etc/hostname`, else `localhost`.
pub(crate) fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
