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
use crate::agent::Halt;
use crate::config::Config;
use crate::coordination::now_ms;
use crate::error::{Error, ErrorKind, Result, exit};
use crate::report::{ReportedError, RunReport, TaskStatus};
use crate::scripts::ScriptRegistry;
use crate::store::{AgentRecord, HostRole, HostState, RunStatus, Store, TaskRecord};
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
        Self::joining(task_id, roles, config, store, registry).await
    }

    /// [`join`](Self::join) once its roles are checked (none: the agents
    /// come from elsewhere, see `join_spawned`).
    pub(super) async fn joining(
        task_id: &str,
        roles: Vec<String>,
        config: Config,
        store: Arc<dyn Store>,
        registry: Arc<ScriptRegistry>,
    ) -> Result<Self> {
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

    /// Prepares to continue task `task_id` whose processes are all gone
    /// (`orrery resume`): its agents that had not ended come back in this
    /// process with their ids, phases and checkpoints. Fails with BadInput
    /// when the store has no such task or a role has no script here, and
    /// with a Coordination error when the task ended or a process of it is
    /// still alive (join it instead).
    pub async fn resume(
        task_id: &str,
        config: Config,
        store: Arc<dyn Store>,
        registry: Arc<ScriptRegistry>,
    ) -> Result<Self> {
        let record = store.task_get(task_id).await?.ok_or_else(|| {
            Error::bad_input(
                format!("orrery resume {task_id}"),
                format!("no task '{task_id}' in {}", store.describe()),
            )
        })?;
        if !record.is_running() && record.status != RunStatus::Stopping {
            return Err(Error::Coordination(format!(
                "cannot resume task '{task_id}': its run already ended ({})",
                record.status
            )));
        }
        // Processes that beat a moment ago may have just died: wait until
        // they would be lost; one that beats meanwhile is alive.
        let lost_after = config.heartbeat_interval * crate::coordination::LOST_AFTER_BEATS;
        let asked = now_ms();
        let alive = loop {
            let now = now_ms();
            let hosts = store.host_list(task_id).await?;
            let recent: Vec<_> = hosts
                .into_iter()
                .filter(|h| {
                    h.state == HostState::Alive && now.saturating_sub(h.heartbeat_ms) <= lost_after
                })
                .collect();
            if recent.is_empty() || recent.iter().any(|h| h.heartbeat_ms > asked) {
                break recent.into_iter().map(|h| h.id).collect::<Vec<_>>();
            }
            tokio::time::sleep(Duration::from_millis(config.heartbeat_interval)).await;
        };
        if !alive.is_empty() {
            return Err(Error::Coordination(format!(
                "cannot resume task '{task_id}': {} of it still heartbeat ({}); add agents to it \
                 with `orrery run --join {task_id} --role ROLE`, or wait {lost_after} ms",
                crate::text::plural(alive.len() as u64, "process", "processes"),
                alive.join(", ")
            )));
        }
        let recorded = store.agent_list(task_id).await?;
        let agents: Vec<_> = recorded
            .iter()
            .filter(|a| crate::coordination::is_live(a))
            .cloned()
            .collect();
        for a in &agents {
            registry.role(&a.role)?;
        }
        let mut me = Self::resuming(task_id, record, agents, config, store, registry)?;
        // Cut off before it recorded its first agents: those start now.
        let missing = super::never_started(&me.coord.task, &me.registry, &recorded);
        let store = me.coord.store.as_ref();
        let missing =
            super::claim_never_started(store, &me.coord.task, &me.registry, missing).await?;
        if !missing.is_empty() {
            for role in &missing {
                me.registry.role(role)?;
            }
            tracing::warn!(
                "task '{task_id}': its run stopped before it started {}; starting them now",
                missing.join(", ")
            );
            if let Mode::Joiner { roles, .. } = &mut me.mode {
                *roles = missing;
            }
        }
        Ok(me)
    }

    /// An orchestrator that brings `agents` of the task of `record` back
    /// in this process (as a joiner: the lease decides who leads).
    pub(super) fn resuming(
        task_id: &str,
        record: TaskRecord,
        agents: Vec<AgentRecord>,
        config: Config,
        store: Arc<dyn Store>,
        registry: Arc<ScriptRegistry>,
    ) -> Result<Self> {
        let task: Task = serde_json::from_value(record.definition.clone()).map_err(|e| {
            Error::Coordination(format!(
                "task '{task_id}' in {} has an unreadable definition: {e}",
                store.describe()
            ))
        })?;
        let mode = Mode::Joiner {
            roles: Vec::new(),
            owner: record.owner,
            owner_roles: record.roles,
            started_ms: record.started_ms,
        };
        let client = crate::llm::LlmClient::new(config.llm.clone())
            .map_err(|e| Error::bad_llm_settings("LLM settings", e))?;
        let mut me = Self::with_mode(task, config, store, registry, client, mode)?;
        me.resume = agents;
        Ok(me)
    }

    /// A resumer takes the lease (waiting for the last holder's to expire)
    /// and fences every process of the task that did not leave, so none of
    /// them can write again.
    async fn take_over(&mut self) -> Result<()> {
        let interval = self.coord.presence.interval();
        let deadline =
            Instant::now() + interval * (crate::coordination::LOST_AFTER_BEATS as u32 + 2);
        loop {
            if self.hold_lease().await? {
                self.lead = true;
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::Coordination(format!(
                    "cannot resume task '{}': another process holds its lease",
                    self.coord.task.id
                )));
            }
            tokio::time::sleep(interval).await;
        }
        let store = self.coord.store.clone();
        let id = self.coord.task.id.clone();
        for mut host in store.host_list(&id).await? {
            if host.id == self.coord.presence.host() || host.state == HostState::Left {
                continue;
            }
            tracing::warn!(
                "task '{id}': fencing its process {} (it did not leave: it may still write)",
                host.id
            );
            store.member_fence(&id, &host.id).await?;
            if host.state != HostState::Lost {
                // Silent for this process's loss limit at least: `resume`
                // waited that long for the task's processes.
                host.lost_after_ms = Some(
                    self.coord.config.heartbeat_interval * crate::coordination::LOST_AFTER_BEATS,
                );
            }
            host.state = HostState::Lost;
            store.heartbeat(&id, &host, &[]).await?;
        }
        self.record_status(RunStatus::Running, None).await;
        Ok(())
    }

    /// Records the run in the store (owner) and returns its deadline. A
    /// joiner's deadline is the owner's: the task's timeout from its start.
    pub(super) async fn open(&mut self) -> Result<Instant> {
        let timeout = Duration::from_millis(self.coord.task.timeout);
        match &self.mode {
            Mode::Owner => {
                self.claim_task().await?;
                self.join_members().await?;
                self.lead = self.hold_lease().await?;
                // Alive before any agent shows, so a joiner never finds the
                // task without a live owner.
                self.beat().await;
                Ok(Instant::now() + timeout)
            }
            Mode::Joiner { started_ms, .. } => {
                let started_ms = *started_ms;
                self.join_members().await?;
                if let Some(host) = self.adopt_from.clone() {
                    // Others go on with the task: fence only the process
                    // whose agents come here; the lease stays where it is.
                    self.fence_adopted_host(&host).await?;
                } else if !self.resume.is_empty() {
                    self.take_over().await?;
                }
                let elapsed = Duration::from_millis(now_ms().saturating_sub(started_ms));
                Ok(Instant::now() + timeout.saturating_sub(elapsed))
            }
        }
    }

    /// Joins the task's members under a new epoch: from now on the server
    /// refuses this process's writes once it is declared lost.
    async fn join_members(&mut self) -> Result<()> {
        let epoch = self.coord.presence.join().await?;
        tracing::debug!(
            host = %self.coord.presence.host(),
            epoch,
            "joined task '{}' as a member",
            self.coord.task.id
        );
        Ok(())
    }

    /// Takes or renews the task's lease for this process; true when it
    /// holds it. Its time is the silence after which a member is lost, so a
    /// holder that stops renewing is replaced when it would be declared lost.
    async fn hold_lease(&self) -> Result<bool> {
        let presence = &self.coord.presence;
        let ttl = presence.interval() * crate::coordination::LOST_AFTER_BEATS as u32;
        Ok(self
            .coord
            .store
            .lease(&self.coord.task.id, presence.host(), ttl)
            .await?)
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
        let mut roles = self.registry.roles();
        let mut started_ms = self.coord.metrics.start_time();
        if let Mode::Joiner {
            owner_roles,
            started_ms: started,
            ..
        } = &self.mode
        {
            // A joiner that took the lease over keeps what the run started with.
            roles.extend(owner_roles.iter().cloned());
            roles.sort();
            roles.dedup();
            started_ms = *started;
        }
        TaskRecord {
            definition: serde_json::to_value(&*self.coord.task).expect("a task always serializes"),
            status,
            owner: self.coord.presence.host().to_string(),
            roles,
            started_ms,
            ended_ms,
            journal: self.coord.config.journal_max_len > 0,
            heartbeat_interval: self.coord.config.heartbeat_interval,
        }
    }

    /// Writes this process's heartbeat and activity; notes a fence.
    pub(super) async fn beat(&mut self) {
        match self.beat_as(HostState::Alive).await {
            Beat::Kept => {}
            Beat::Fenced => {
                self.fenced = true;
                let _ = self.stop_tx.send(Halt::Stop);
            }
            Beat::DataLost => self.on_data_lost().await,
        }
    }

    /// The server no longer holds this process's membership, though nobody
    /// fenced it: it lost the task's data (a restart without persistence, a
    /// flush). The run goes on with what is written from now on: this
    /// process joins again (a new epoch), the task record is written again
    /// if it is gone, and the report says what was lost (a fatal error: the
    /// task cannot be complete). Consumer groups are made again by the next
    /// reads (on NOGROUP).
    async fn on_data_lost(&mut self) {
        let store = self.coord.store.clone();
        let id = self.coord.task.id.clone();
        let e = Error::Coordination(format!(
            "the store {} lost this task's data (a restart without persistence, or a flush), \
             noticed at {} ms since the epoch: the blackboard, the messages queued or in flight, \
             the dead letters, the agents' and the task's records, locks and counters written \
             before then are gone; the task went on with what was written after",
            store.describe(),
            now_ms()
        ));
        tracing::error!("{e}");
        self.record("host", &e, true);
        // The hosts' records went with the data, so a lease holder would
        // see no other process and no busy agent, and an empty set of
        // queues (the end decided while others' agents still run or have
        // messages to send).
        self.no_end_for_a_loss_limit();
        if let Err(e) = self.coord.presence.join().await {
            tracing::warn!("cannot join the task again: {e}");
        }
        if let Ok(None) = store.task_get(&id).await {
            let status = if self.stopping {
                RunStatus::Stopping
            } else {
                RunStatus::Running
            };
            self.record_status(status, None).await;
        }
    }

    /// Decides no end within one loss limit from now: by then every live
    /// process has beaten (written its record, with its busy agents) at
    /// least once, so a lease holder that could not see them yet (after
    /// the server lost the task's data, or on taking the lease over) does
    /// not end the task under them.
    fn no_end_for_a_loss_limit(&mut self) {
        let loss_limit =
            self.coord.presence.interval() * crate::coordination::LOST_AFTER_BEATS as u32;
        self.quiet_not_before = Some(tokio::time::Instant::now() + loss_limit);
    }

    /// How the heartbeat went.
    async fn beat_as(&self, state: HostState) -> Beat {
        let role = if self.lead {
            HostRole::Owner
        } else {
            HostRole::Joiner
        };
        let agents = self.agents.running_ids();
        let presence = &self.coord.presence;
        match presence
            .beat(role, state, &self.coord.activity, &agents)
            .await
        {
            Ok(true) => Beat::Kept,
            Ok(false) => Beat::DataLost,
            Err(Error::Fenced { .. }) => Beat::Fenced,
            Err(e) => {
                tracing::warn!("heartbeat failed: {e}");
                Beat::Kept
            }
        }
    }

    /// Every heartbeat period: beat and renew (or take over) the lease; the
    /// lease holder recovers the agents of lost processes and notes whether
    /// others take part; the others check that the run goes on.
    pub(super) async fn on_heartbeat(&mut self) {
        self.beat().await;
        if self.fenced {
            return;
        }
        self.check_handed().await;
        match self.hold_lease().await {
            Ok(held) => {
                if held && !self.lead && !self.stopping {
                    tracing::warn!(
                        "task '{}': this process took over the task's lease (end of task, record, report)",
                        self.coord.task.id
                    );
                    self.lead = true;
                    self.no_end_for_a_loss_limit();
                    self.record_status(RunStatus::Running, None).await;
                }
                self.lead = held || (self.lead && self.stopping);
            }
            Err(e) => tracing::warn!("cannot renew the task's lease: {e}"),
        }
        match self.lead {
            true => {
                let coord = self.coord.clone();
                match coord
                    .presence
                    .reap(&coord.states, &coord.bus, self.keep_lost)
                    .await
                {
                    Ok(lost) if self.keep_lost => {
                        for agent in lost {
                            tracing::warn!(agent = %agent.id, host = %agent.host, released = agent.released, "agent lost with its process; it waits for another to adopt it");
                        }
                    }
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
            false => self.check_end().await,
        }
    }

    /// Notes whether other live processes take part (kept as it was when the
    /// store cannot tell).
    pub(super) async fn refresh_shared(&mut self) {
        if let Ok(others) = self.coord.presence.others().await {
            self.shared = !others.is_empty();
        }
    }

    /// Stops this process's agents when the lease holder recorded the end.
    /// A holder that stopped heartbeating is replaced through the lease (see
    /// [`on_heartbeat`](Self::on_heartbeat)), not a reason to stop.
    async fn check_end(&mut self) {
        if self.stopping {
            return;
        }
        let store = self.coord.store.clone();
        let id = self.coord.task.id.clone();
        let ended = match store.task_get(&id).await {
            Ok(Some(record)) => !record.is_running(),
            // No record: the server lost the task's data (`clean` refuses a
            // running task); the next heartbeat notices and writes it back.
            Ok(None) => false,
            Err(e) => {
                tracing::warn!("cannot read the task record: {e}");
                return;
            }
        };
        if ended {
            self.stopping = true;
            let _ = self.stop_tx.send(Halt::Stop);
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
        if self.fenced {
            return;
        }
        if report.is_some_and(|r| r.status == TaskStatus::HandedOver) {
            self.hand_over().await;
            return;
        }
        if self.lead {
            let status = match report.map(|r| r.status) {
                Some(TaskStatus::Complete) => RunStatus::Complete,
                Some(TaskStatus::Timeout) => RunStatus::Timeout,
                Some(TaskStatus::Interrupted | TaskStatus::HandedOver) => RunStatus::Interrupted,
                Some(TaskStatus::Failed) | None => RunStatus::Failed,
            };
            self.record_status(status, Some(now_ms())).await;
        }
        self.beat_as(HostState::Left).await;
        self.retain().await;
    }

    /// Leaves the task running for another process: records this one
    /// `left` (so a resume need not wait out its heartbeats, and does not
    /// fence it) and gives up the lease at once (renewed for 1 ms), so the
    /// resume takes it without waiting for it to expire. The task's record
    /// and its keys stay as they are.
    async fn hand_over(&self) {
        let left = self.left.len();
        tracing::info!(
            "task '{}': this process leaves it to another ({} left at a callback boundary)",
            self.coord.task.id,
            crate::text::plural(left as u64, "agent", "agents")
        );
        self.beat_as(HostState::Left).await;
        if self.lead {
            let presence = &self.coord.presence;
            let store = &self.coord.store;
            let gone = store
                .lease(
                    &self.coord.task.id,
                    presence.host(),
                    Duration::from_millis(1),
                )
                .await;
            if let Err(e) = gone {
                tracing::warn!("cannot give up the task's lease: {e}");
            }
        }
    }

    /// Once the task has ended, gives every key of it the retention's expiry.
    /// Each process leaving an ended task makes the pass, so keys a joiner
    /// wrote after the owner's pass expire too; a joiner leaving a task that
    /// goes on leaves its keys alone.
    async fn retain(&self) {
        let store = &self.coord.store;
        if store.is_embedded() {
            return;
        }
        let id = &self.coord.task.id;
        if !self.lead {
            match store.task_get(id).await {
                Ok(Some(record)) if record.status != RunStatus::Running => {}
                Ok(Some(_)) => return,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!("cannot read the task record to set its retention: {e}");
                    return;
                }
            }
        }
        let retention = Duration::from_secs(self.coord.config.retention);
        if let Err(e) = store.retain(id, retention).await {
            tracing::warn!("cannot set the retention of task '{id}' in the store: {e}");
        }
    }
}

/// What a heartbeat found.
enum Beat {
    /// Written (or failed for a passing reason, already logged).
    Kept,
    /// Refused: this process was declared lost.
    Fenced,
    /// Written, but the server no longer held this process's membership.
    DataLost,
}
