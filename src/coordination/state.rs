//! Agent lifecycle: `INIT → READY → PLANNING → EXECUTING → VALIDATING → COMPLETE`,
//! `FAILED` from any phase that has not ended.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::journal::{Event, Journal};
use super::now_ms;
use crate::error::{Error, Result};
use crate::store::{AgentRecord, PhaseEntry, Store};

/// A phase of an agent's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AgentPhase {
    /// Created, script not loaded yet.
    Init,
    /// Script loaded, about to start.
    Ready,
    /// Working out what to do.
    Planning,
    /// Doing it.
    Executing,
    /// Checking the results.
    Validating,
    /// Done (terminal).
    Complete,
    /// Failed (terminal).
    Failed,
}

impl AgentPhase {
    /// Every phase, in lifecycle order.
    pub const ALL: [AgentPhase; 7] = [
        AgentPhase::Init,
        AgentPhase::Ready,
        AgentPhase::Planning,
        AgentPhase::Executing,
        AgentPhase::Validating,
        AgentPhase::Complete,
        AgentPhase::Failed,
    ];

    /// The name scripts and stores use (`EXECUTING`).
    pub fn as_str(self) -> &'static str {
        match self {
            AgentPhase::Init => "INIT",
            AgentPhase::Ready => "READY",
            AgentPhase::Planning => "PLANNING",
            AgentPhase::Executing => "EXECUTING",
            AgentPhase::Validating => "VALIDATING",
            AgentPhase::Complete => "COMPLETE",
            AgentPhase::Failed => "FAILED",
        }
    }

    /// True for COMPLETE and FAILED.
    pub fn is_terminal(self) -> bool {
        matches!(self, AgentPhase::Complete | AgentPhase::Failed)
    }

    /// Legal moves: forward along the lifecycle (phases may be skipped, as a
    /// validator has nothing to plan), or to FAILED, never out of a terminal phase.
    pub fn can_move_to(self, next: AgentPhase) -> bool {
        !self.is_terminal() && (next == AgentPhase::Failed || next > self)
    }
}

/// True when the agent of `record` has not ended: its phase is one this host
/// knows and is neither COMPLETE nor FAILED.
pub fn is_live(record: &AgentRecord) -> bool {
    record
        .phase
        .parse::<AgentPhase>()
        .is_ok_and(|p| !p.is_terminal())
}

impl fmt::Display for AgentPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AgentPhase {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        AgentPhase::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::bad_input(
                    format!("phase '{s}'"),
                    "expected one of INIT, READY, PLANNING, EXECUTING, VALIDATING, COMPLETE, FAILED",
                )
            })
    }
}

/// A phase change, as shown live on stderr.
#[derive(Debug, Clone)]
pub struct PhaseChange {
    /// Agent id.
    pub agent: String,
    /// Phase before.
    pub from: Option<AgentPhase>,
    /// Phase after.
    pub to: AgentPhase,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// The failure reason, for FAILED.
    pub reason: Option<String>,
}

/// Keeps every agent's phase and history in the store.
pub struct AgentStateManager {
    store: Arc<dyn Store>,
    task: String,
    host: String,
    changes: broadcast::Sender<PhaseChange>,
    journal: Journal,
    /// The last record this process wrote for each of its agents still
    /// running: when the server lost the task's data (a restart without
    /// persistence), the next phase change starts from it and writes it back.
    own: parking_lot::Mutex<std::collections::HashMap<String, AgentRecord>>,
}

impl AgentStateManager {
    pub(super) fn new(store: Arc<dyn Store>, task: &str, host: &str, journal: Journal) -> Self {
        AgentStateManager {
            store,
            task: task.to_string(),
            host: host.to_string(),
            changes: broadcast::channel(256).0,
            journal,
            own: parking_lot::Mutex::default(),
        }
    }

    /// Keeps `record` as this process's copy (dropped once the agent ended).
    fn keep(&self, record: &AgentRecord) {
        let mut own = self.own.lock();
        let ended = matches!(
            record.phase.parse::<AgentPhase>(),
            Ok(AgentPhase::Complete | AgentPhase::Failed)
        );
        if ended {
            own.remove(&record.id);
        } else {
            own.insert(record.id.clone(), record.clone());
        }
    }

    /// Phase changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<PhaseChange> {
        self.changes.subscribe()
    }

    /// Records a new agent in INIT, unless `max_live` agents of the task
    /// have not ended, in this process or any other sharing the store
    /// (SpawnLimit).
    pub async fn register(&self, id: &str, role: &str, max_live: usize) -> Result<()> {
        let now = now_ms();
        let record = AgentRecord {
            id: id.to_string(),
            role: role.to_string(),
            phase: AgentPhase::Init.as_str().to_string(),
            history: vec![PhaseEntry {
                phase: AgentPhase::Init.as_str().to_string(),
                at_ms: now,
            }],
            heartbeat_ms: now,
            host: self.host.clone(),
            error: None,
        };
        if !self
            .store
            .agent_register(&self.task, &record, max_live)
            .await?
        {
            return Err(Error::SpawnLimit {
                role: role.to_string(),
                live: max_live,
                max: max_live,
            });
        }
        self.keep(&record);
        self.journal.record_for(id, || Event::Phase {
            role: Some(role.to_string()),
            from: None,
            to: AgentPhase::Init.to_string(),
            reason: None,
        });
        let _ = self.changes.send(PhaseChange {
            agent: id.to_string(),
            from: None,
            to: AgentPhase::Init,
            at_ms: now,
            reason: None,
        });
        Ok(())
    }

    /// Moves agent `id` to `to`. An illegal move is the caller's mistake, not a
    /// store failure: a BadInput error naming the agent and both phases (a
    /// script that asks for one gets a script error at its line).
    pub async fn transition(&self, id: &str, to: AgentPhase, reason: Option<String>) -> Result<()> {
        let stored = self.store.agent_get(&self.task, id).await?;
        let mut record = match stored {
            Some(record) => record,
            None => {
                let kept = self.own.lock().get(id).cloned();
                let record = kept.ok_or_else(|| {
                    Error::Coordination(format!("no agent '{id}' in task '{}'", self.task))
                })?;
                tracing::warn!(
                    agent = %id,
                    "the store no longer holds this agent's record (it lost the task's data): \
                     written again from this process's copy"
                );
                record
            }
        };
        let from: AgentPhase = record.phase.parse()?;
        if !from.can_move_to(to) {
            return Err(Error::bad_input(
                format!("state.set('{to}') of agent '{id}'"),
                format!(
                    "illegal phase transition {from} -> {to}: {}",
                    why_illegal(from)
                ),
            ));
        }
        let now = now_ms();
        record.phase = to.as_str().to_string();
        record.history.push(PhaseEntry {
            phase: record.phase.clone(),
            at_ms: now,
        });
        record.heartbeat_ms = now;
        if reason.is_some() {
            record.error = reason.clone();
        }
        self.store.agent_put(&self.task, &record).await?;
        self.keep(&record);
        self.journal.record_for(id, || Event::Phase {
            role: None,
            from: Some(from.to_string()),
            to: to.to_string(),
            reason: reason.clone(),
        });
        let _ = self.changes.send(PhaseChange {
            agent: id.to_string(),
            from: Some(from),
            to,
            at_ms: now,
            reason,
        });
        Ok(())
    }

    /// Takes over the record of an agent of a process that is gone (for
    /// `orrery resume`): the same phase and history, run by this host now.
    pub async fn adopt(&self, record: &AgentRecord) -> Result<()> {
        let mut record = record.clone();
        record.host = self.host.clone();
        record.heartbeat_ms = now_ms();
        self.store.agent_put(&self.task, &record).await?;
        self.keep(&record);
        Ok(())
    }

    /// Agent `id`'s record.
    pub async fn get(&self, id: &str) -> Result<Option<AgentRecord>> {
        Ok(self.store.agent_get(&self.task, id).await?)
    }

    /// Every agent's record.
    pub async fn list(&self) -> Result<Vec<AgentRecord>> {
        Ok(self.store.agent_list(&self.task).await?)
    }

    /// Waits until agent `id` has ended (COMPLETE or FAILED), at most
    /// `wait` (`None`: as long as it takes); returns its record then, or
    /// `Ok(None)` when the wait ran out. Fails with BadInput when no agent
    /// of the task has that id. Changes made by this process wake it at
    /// once; those of other processes sharing the store are seen within
    /// [`ENDED_POLL`].
    pub async fn wait_ended(
        &self,
        id: &str,
        wait: Option<std::time::Duration>,
    ) -> Result<Option<AgentRecord>> {
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        let mut changes = self.subscribe();
        loop {
            let record = self.get(id).await?.ok_or_else(|| {
                Error::bad_input(format!("agent '{id}'"), "no agent of the task has this id")
            })?;
            if record.phase.parse().is_ok_and(AgentPhase::is_terminal) {
                return Ok(Some(record));
            }
            let now = tokio::time::Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            let slice = deadline.map_or(ENDED_POLL, |d| (d - now).min(ENDED_POLL));
            let ended_here = async {
                loop {
                    match changes.recv().await {
                        Ok(c) if c.agent == id && c.to.is_terminal() => return,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                    }
                }
            };
            let _ = tokio::time::timeout(slice, ended_here).await;
        }
    }
}

/// How often [`AgentStateManager::wait_ended`] looks at the store for the
/// end of an agent of another process.
pub const ENDED_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Why no move out of `from` to the phase asked for is legal.
fn why_illegal(from: AgentPhase) -> &'static str {
    if from.is_terminal() {
        "COMPLETE and FAILED are final"
    } else {
        "phases only move forward (INIT, READY, PLANNING, EXECUTING, VALIDATING, COMPLETE), or to FAILED"
    }
}
