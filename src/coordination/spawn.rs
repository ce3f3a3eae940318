//! Spawn conditions and the bound on live agents.
//!
//! An agent reports `signal(trigger, value)`; every registered condition on that
//! trigger whose threshold the value reaches starts its role (once, unless the
//! condition repeats). The orchestrator does the starting through the
//! [`Launcher`] it installs, on the task of whoever asks (no request to its
//! own task and back: each would be a thread wake-up); the controller waits
//! at most `spawn_timeout` for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;

use super::MetricsCollector;
use super::journal::{Event, Journal};
use super::quotas::{check_name, exceeded};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::task::{SpawnCondition, Task};

/// Starts agents for the [`SpawnController`]: the orchestrator's side of a
/// spawn, run on the task of the caller.
pub trait Launcher: Send + Sync {
    /// Starts an agent of `role`, asked for by `parent` (for the record);
    /// its id. Once it has begun, the start is done (or undone) even when
    /// the returned future is dropped.
    fn launch(
        self: Arc<Self>,
        role: &str,
        parent: Option<&str>,
    ) -> BoxFuture<'static, Result<String>>;
}

/// Starts agents on signals and on request, within `max_agents`.
pub struct SpawnController {
    task: String,
    store: Arc<dyn Store>,
    metrics: Arc<MetricsCollector>,
    conditions: Mutex<Vec<SpawnCondition>>,
    /// Who starts the agents; none before a run installs one and after it ended.
    launcher: Mutex<Option<Arc<dyn Launcher>>>,
    live: AtomicUsize,
    max_agents: usize,
    /// Agents started over the task's run, and the quota on them.
    started: AtomicUsize,
    max_spawns: usize,
    max_conditions: usize,
    spawn_timeout: Duration,
    journal: Journal,
}

impl SpawnController {
    pub(super) fn new(
        task: &Task,
        config: &Config,
        store: Arc<dyn Store>,
        metrics: Arc<MetricsCollector>,
        journal: Journal,
    ) -> Self {
        SpawnController {
            task: task.id.clone(),
            store,
            metrics,
            conditions: Mutex::new(task.spawn.clone()),
            launcher: Mutex::new(None),
            live: AtomicUsize::new(0),
            max_agents: config.max_agents,
            started: AtomicUsize::new(0),
            max_spawns: config.quotas.max_spawns,
            max_conditions: config.quotas.max_spawn_conditions,
            spawn_timeout: Duration::from_millis(config.spawn_timeout),
            journal,
        }
    }

    /// From now on agents are started by `launcher` (none: spawns fail,
    /// the task is shutting down).
    pub fn install(&self, launcher: Option<Arc<dyn Launcher>>) {
        *self.launcher.lock() = launcher;
    }

    /// Adds a condition and returns true, or returns false when an identical
    /// one (same trigger, threshold, role and repeat flag) is registered
    /// already: a role's top level runs at every spawn and reload, so
    /// registering there must not add a condition each time (nor count
    /// against the quota). Fails on a bad trigger name, or when the task has
    /// `max_spawn_conditions` already.
    pub fn register(&self, condition: SpawnCondition) -> Result<bool> {
        check_name("spawn trigger", &condition.trigger)?;
        let mut conditions = self.conditions.lock();
        if conditions.contains(&condition) {
            return Ok(false);
        }
        if conditions.len() >= self.max_conditions {
            return Err(exceeded(
                format!("spawn condition on '{}'", condition.trigger),
                "max_spawn_conditions",
                self.max_conditions,
                "conditions",
                &format!("the task has {} spawn conditions", conditions.len()),
            ));
        }
        conditions.push(condition);
        Ok(true)
    }

    /// The registered conditions.
    pub fn conditions(&self) -> Vec<SpawnCondition> {
        self.conditions.lock().clone()
    }

    /// Agents live now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Reserves a slot for a new agent of `role`, or fails with SpawnLimit
    /// (`max_agents` live) or SpawnQuota (`max_spawns` started in the task).
    pub fn reserve(&self, role: &str) -> Result<()> {
        self.started
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max_spawns).then_some(n + 1)
            })
            .map_err(|started| Error::SpawnQuota {
                role: role.to_string(),
                started,
                max: self.max_spawns,
            })?;
        self.live
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max_agents).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|live| {
                // Refused: it does not count as started.
                self.started.fetch_sub(1, Ordering::SeqCst);
                Error::SpawnLimit {
                    role: role.to_string(),
                    live,
                    max: self.max_agents,
                }
            })
    }

    /// Frees the slot of an agent that ended.
    pub fn release(&self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }

    /// Reports `value` for `trigger`; starts what it satisfies. Returns the new agents' ids.
    pub async fn signal(&self, from: &str, trigger: &str, value: f64) -> Result<Vec<String>> {
        check_name("spawn trigger", trigger)?;
        let due: Vec<(usize, SpawnCondition)> = self
            .conditions
            .lock()
            .iter()
            .enumerate()
            .filter(|(_, c)| c.trigger == trigger && value >= c.threshold)
            .map(|(i, c)| (i, c.clone()))
            .collect();
        let mut started = Vec::new();
        for (index, condition) in due {
            // The claim lives in the store, so a condition fires once even when
            // several hosts see the signal.
            let claim = format!("spawn:{trigger}:{index}:{}", condition.agent);
            if !condition.repeat && !self.store.claim(&self.task, &claim).await? {
                continue;
            }
            let id = self.spawn(&condition.agent, Some(from)).await?;
            self.journal.record_for(from, || Event::ConditionMet {
                trigger: trigger.to_string(),
                threshold: condition.threshold,
                value,
                role: condition.agent.clone(),
                started: id.clone(),
            });
            started.push(id);
        }
        Ok(started)
    }

    /// Starts an agent of `role` now; returns its id.
    pub async fn spawn(&self, role: &str, parent: Option<&str>) -> Result<String> {
        let launcher = self.launcher.lock().clone();
        let Some(launcher) = launcher else {
            return Err(Error::Coordination(format!(
                "cannot spawn '{role}': the task is shutting down"
            )));
        };
        let launched = launcher.launch(role, parent);
        let id = match tokio::time::timeout(self.spawn_timeout, launched).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(Error::AgentTimeout {
                    what: format!("spawn of '{role}'"),
                    limit_ms: self.spawn_timeout.as_millis() as u64,
                });
            }
        };
        self.metrics.spawn_event();
        Ok(id)
    }
}
