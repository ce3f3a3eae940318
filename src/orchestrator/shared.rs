//! A task shared by several processes through the store.
//!
//! The owner (`orrery run TASK`) records the task in the store, so others can
//! join it, and owns its end: it stops when every agent of every live process
//! has gone quiet (or its own agents ended and no other process runs any),
//! records the end, and recovers the agents of processes that stopped
//! heartbeating. A joiner (`orrery run --join ID --role R`) reads the task
//! from the store, runs agents of the given roles, publishes its activity on
//! every change, and stops when the owner records the end, when its own
//! agents ended, or when the owner stops heartbeating.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Orchestrator;
use crate::config::Config;
use crate::coordination::now_ms;
use crate::error::{Error, ErrorKind, Result, exit};
use crate::report::{ReportedError, RunReport, TaskStatus};
use crate::scripts::ScriptRegistry;
use crate::store::{HostRole, HostState, RunStatus, Store, TaskRecord};
use crate::task::Task;

/// Whether this process runs the task or joins another process's run.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Runs the task: records it in the store and decides its end.
    Owner,
    /// Adds agents to a task another process owns.
    Joiner {
        /// Roles to start, one agent each.
        roles: Vec<String>,
        /// Host id of the owning process.
        owner: String,
        /// Roles the owner has scripts for (addressable from here).
        owner_roles: Vec<String>,
        /// When the owner started the run (ms since the epoch).
        started_ms: u64,
    },
}

impl Mode {
    /// True for the process that runs the task.
    pub fn is_owner(&self) -> bool {
        matches!(self, Mode::Owner)
    }
}

impl Orchestrator {
    /// Prepares to add agents of `roles` to the task `task_id` that another
    /// process runs on the shared `store`. Fails with BadInput when the store
    /// has no such task or a role has no script here, and with a Coordination
    /// error when the task already ended.
    pub async fn join(
        task_id: &str,
        roles: Vec<String>,
        config: Config,
        store: Arc<dyn Store>,
        registry: Arc<ScriptRegistry>,
    ) -> Result<Self> {
        if roles.is_empty() {
            return Err(Error::bad_input(
                "flag --role",
                "--join needs at least one role to run (--role beta)",
            ));
        }
        for role in &roles {
            registry.role(role)?;
        }
        let record = store.task_get(task_id).await?.ok_or_else(|| {
            Error::bad_input(
                format!("flag --join {task_id}"),
                format!(
                    "no task '{task_id}' in {}; start it first with `orrery run TASK_FILE --store URL`",
                    store.describe()
                ),
            )
        })?;
        if !record.is_running() {
            return Err(Error::Coordination(format!(
                "cannot join task '{task_id}': its run already ended ({})",
                record.status
            )));
        }
        let task: Task = serde_json::from_value(record.definition.clone()).map_err(|e| {
            Error::Coordination(format!(
                "task '{task_id}' in {} has an unreadable definition: {e}",
                store.describe()
            ))
        })?;
        let mode = Mode::Joiner {
            roles,
            owner: record.owner,
            owner_roles: record.roles,
            started_ms: record.started_ms,
        };
        let client = crate::llm::LlmClient::new(config.llm.clone())
            .map_err(|e| Error::bad_llm_settings("LLM settings", e))?;
        Self::with_mode(task, config, store, registry, client, mode)
    }

    /// Records the run in the store (owner) and returns its deadline. A
    /// joiner's deadline is the owner's: the task's timeout from its start.
    pub(super) async fn open(&mut self) -> Result<Instant> {
        let timeout = Duration::from_millis(self.coord.task.timeout);
        match &self.mode {
            Mode::Owner => {
                self.claim_task().await?;
                // Alive before any agent shows, so a joiner never finds the
                // task without a live owner.
                self.beat().await;
                Ok(Instant::now() + timeout)
            }
            Mode::Joiner { started_ms, .. } => {
                let elapsed = Duration::from_millis(now_ms().saturating_sub(*started_ms));
                Ok(Instant::now() + timeout.saturating_sub(elapsed))
            }
        }
    }

    /// Makes this process the owner of the task in the store. A run of the
    /// same task whose owner is still alive is refused; what an ended (or
    /// abandoned) run left behind is removed first.
    async fn claim_task(&self) -> Result<()> {
        let store = &self.coord.store;
        let id = &self.coord.task.id;
        if let Some(previous) = store.task_get(id).await? {
            let now = now_ms();
            let owner_alive = store
                .host_list(id)
                .await?
                .iter()
                .any(|h| h.id == previous.owner && self.coord.presence.is_alive(h, now));
            if previous.is_running() && owner_alive {
                return Err(Error::Coordination(format!(
                    "task '{id}' is already running in {} (owned by {}); add agents to it with \
                     `orrery run --join {id} --role ROLE`, or wait for it to end",
                    store.describe(),
                    previous.owner
                )));
            }
            tracing::warn!(
                "task '{id}': removing what its previous run ({}) left in {}",
                previous.status,
                store.describe()
            );
            store.clean(id).await?;
        } else if !store.is_embedded() {
            // Keys without a task record: a run that never finished starting.
            store.clean(id).await?;
        }
        store
            .task_put(id, &self.task_record(RunStatus::Running, None))
            .await?;
        Ok(())
    }

    fn task_record(&self, status: RunStatus, ended_ms: Option<u64>) -> TaskRecord {
        TaskRecord {
            definition: serde_json::to_value(&*self.coord.task).expect("a task always serializes"),
            status,
            owner: self.coord.presence.host().to_string(),
            roles: self.registry.roles(),
            started_ms: self.coord.metrics.start_time(),
            ended_ms,
        }
    }

    /// Writes this process's heartbeat and activity.
    pub(super) async fn beat(&self) {
        self.beat_as(HostState::Alive).await;
    }

    async fn beat_as(&self, state: HostState) {
        let role = if self.mode.is_owner() {
            HostRole::Owner
        } else {
            HostRole::Joiner
        };
        let agents: Vec<String> = self.running.values().map(|(id, _)| id.clone()).collect();
        let presence = &self.coord.presence;
        if let Err(e) = presence
            .beat(role, state, &self.coord.activity, &agents)
            .await
        {
            tracing::warn!("heartbeat failed: {e}");
        }
    }

    /// Every heartbeat period: beat; the owner recovers the agents of lost
    /// processes and notes whether others take part; a joiner checks that
    /// the run goes on.
    pub(super) async fn on_heartbeat(&mut self) {
        self.beat().await;
        match self.mode.clone() {
            Mode::Owner => {
                let coord = self.coord.clone();
                match coord.presence.reap(&coord.states, &coord.bus).await {
                    Ok(lost) => {
                        for agent in lost {
                            tracing::warn!(agent = %agent.id, host = %agent.host, "agent lost with its process; {} went back to {} queue", crate::text::plural(agent.released as u64, "message", "messages"), if agent.released == 1 { "its" } else { "their" });
                            self.errors.push(ReportedError {
                                agent: agent.id,
                                kind: ErrorKind::Coordination,
                                message: format!(
                                    "lost with its process {}; {} it held went back to {} queue",
                                    agent.host,
                                    crate::text::plural(
                                        agent.released as u64,
                                        "message",
                                        "messages"
                                    ),
                                    if agent.released == 1 { "its" } else { "their" }
                                ),
                                fatal: false,
                                allowed: false,
                                count: 1,
                                exit_code: exit::COORDINATION,
                            });
                        }
                    }
                    Err(e) => tracing::warn!("looking for lost processes failed: {e}"),
                }
                self.refresh_shared().await;
            }
            Mode::Joiner { owner, .. } => self.check_owner(&owner).await,
        }
    }

    /// Notes whether other live processes take part (kept as it was when the
    /// store cannot tell).
    pub(super) async fn refresh_shared(&mut self) {
        if let Ok(others) = self.coord.presence.others().await {
            self.shared = !others.is_empty();
        }
    }

    /// Stops this joiner when the owner recorded the end, or stopped heartbeating.
    async fn check_owner(&mut self, owner: &str) {
        if self.stopping {
            return;
        }
        let store = self.coord.store.clone();
        let id = self.coord.task.id.clone();
        let ended = match store.task_get(&id).await {
            Ok(Some(record)) => !record.is_running() || record.owner != owner,
            Ok(None) => true,
            Err(e) => {
                tracing::warn!("cannot read the task record: {e}");
                return;
            }
        };
        if ended {
            self.stopping = true;
            let _ = self.stop_tx.send(true);
            return;
        }
        let now = now_ms();
        let owner_alive = match store.host_list(&id).await {
            Ok(hosts) => hosts
                .iter()
                .any(|h| h.id == owner && self.coord.presence.is_alive(h, now)),
            Err(_) => return,
        };
        if !owner_alive {
            let e = Error::Coordination(format!(
                "the owner of task '{id}' ({owner}) stopped heartbeating; stopping this process's agents"
            ));
            tracing::error!("{e}");
            self.record("host", &e, true);
            self.stopping = true;
            let _ = self.stop_tx.send(true);
        }
    }

    /// The owner decided the end: joined processes stop their agents now.
    pub(super) async fn mark_stopping(&self) {
        self.record_status(RunStatus::Stopping, None).await;
    }

    async fn record_status(&self, status: RunStatus, ended_ms: Option<u64>) {
        let record = self.task_record(status, ended_ms);
        let store = &self.coord.store;
        if let Err(e) = store.task_put(&self.coord.task.id, &record).await {
            tracing::warn!("cannot record the end of the task: {e}");
        }
    }

    /// Records how the run ended (owner) and that this process left.
    pub(super) async fn close(&self, report: Option<&RunReport>) {
        if self.mode.is_owner() {
            let status = match report.map(|r| r.status) {
                Some(TaskStatus::Complete) => RunStatus::Complete,
                Some(TaskStatus::Timeout) => RunStatus::Timeout,
                _ => RunStatus::Failed,
            };
            self.record_status(status, Some(now_ms())).await;
        }
        self.beat_as(HostState::Left).await;
    }
}
