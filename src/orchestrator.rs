//! Runs one task: starts the agents, serves spawn requests, watches for the
//! end (every agent done, the task gone quiet, or the timeout), and reports.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::task::{Id as TaskId, JoinSet};

use crate::agent::{Agent, AgentOutcome};
use crate::config::Config;
use crate::coordination::{AgentPhase, Coordination, MessageBus, SpawnRequest, now_ms};
use crate::error::{Error, Result};
use crate::lua_api::{AgentContext, AgentLocal, OUTPUT_PREFIX};
use crate::report::{ReportedError, RunReport, TaskStatus};
use crate::scripts::ScriptRegistry;
use crate::store::Store;
use crate::task::Task;

/// Runs one task to its end.
pub struct Orchestrator {
    coord: Arc<Coordination>,
    registry: Arc<ScriptRegistry>,
    spawn_rx: mpsc::UnboundedReceiver<SpawnRequest>,
    agents: JoinSet<AgentOutcome>,
    running: HashMap<TaskId, (String, String)>,
    stop_tx: watch::Sender<bool>,
    started: Vec<String>,
    errors: Vec<ReportedError>,
    next_index: HashMap<String, u32>,
    /// The quiescence probe in flight: its generation and the epoch it started at.
    probe: Option<(u64, u64)>,
}

impl Orchestrator {
    /// Prepares a run of `task`. Fails with BadInput naming the field when the
    /// task names a role that has no script, before anything is stored.
    pub fn new(
        task: Task,
        config: Config,
        store: Arc<dyn Store>,
        registry: Arc<ScriptRegistry>,
    ) -> Result<Self> {
        task.check_roles(&format!("task '{}'", task.id), |role| {
            registry.role(role).map(|_| ())
        })?;
        let (launcher, spawn_rx) = mpsc::unbounded_channel();
        let coord = Coordination::new(Arc::new(task), Arc::new(config), store, launcher);
        coord.bus.set_known_roles(registry.roles());
        Ok(Orchestrator {
            coord,
            registry,
            spawn_rx,
            agents: JoinSet::new(),
            running: HashMap::new(),
            stop_tx: watch::channel(false).0,
            started: Vec::new(),
            errors: Vec::new(),
            next_index: HashMap::new(),
            probe: None,
        })
    }

    /// The task's primitives (subscribe to phase changes here before [`run`](Self::run)).
    pub fn coordination(&self) -> &Arc<Coordination> {
        &self.coord
    }

    /// The roles started up front: the task's `agents`, or every role that no
    /// spawn condition starts.
    pub fn initial_roles(&self) -> Vec<String> {
        let task = &self.coord.task;
        task.agents.clone().unwrap_or_else(|| {
            self.registry
                .roles()
                .into_iter()
                .filter(|r| !task.spawn.iter().any(|c| &c.agent == r))
                .collect()
        })
    }

    /// Runs the task to its end. Errors only when the run could not start
    /// (SpawnLimit, store failure); failures of agents are in the report.
    pub async fn run(mut self) -> Result<RunReport> {
        let started_at = Instant::now();
        let timeout = Duration::from_millis(self.coord.task.timeout);
        for role in self.initial_roles() {
            self.start_agent(&role, None).await?;
        }
        let flusher = self.spawn_metrics_flusher();
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut timed_out = false;
        while !self.agents.is_empty() {
            tokio::select! {
                Some(request) = self.spawn_rx.recv() => {
                    let result = self.start_agent(&request.role, request.parent.as_deref()).await;
                    let _ = request.reply.send(result);
                }
                Some(joined) = self.agents.join_next_with_id() => self.finish_agent(joined).await,
                _ = self.coord.activity.changed() => {
                    if self.is_quiet().await {
                        let _ = self.stop_tx.send(true);
                    }
                }
                _ = &mut deadline => {
                    timed_out = true;
                    self.stop_on_timeout().await;
                    break;
                }
            }
        }
        flusher.abort();
        self.report(started_at, timed_out).await
    }

    async fn start_agent(&mut self, role: &str, parent: Option<&str>) -> Result<String> {
        self.registry.role(role)?;
        self.coord.spawner.reserve(role)?;
        let id = match self.allocate_id(role).await {
            Ok(id) => id,
            Err(e) => {
                self.coord.spawner.release();
                return Err(e);
            }
        };
        self.coord.states.register(&id, role).await?;
        if let Some(parent) = parent {
            tracing::info!(agent = %id, parent = %parent, "spawned");
        }
        let ctx = Arc::new(AgentContext {
            id: id.clone(),
            role: role.to_string(),
            counters: self.coord.metrics.agent(&id),
            queues: MessageBus::queues_of(&id, role),
            coord: self.coord.clone(),
            registry: self.registry.clone(),
            local: Mutex::new(AgentLocal::default()),
        });
        self.coord.bus.join(&id, role);
        self.coord.activity.busy();
        let stop = self.stop_tx.subscribe();
        let handle = self.agents.spawn(run_agent(ctx, stop));
        self.running
            .insert(handle.id(), (id.clone(), role.to_string()));
        self.started.push(id.clone());
        Ok(id)
    }

    /// `role-N` with the first N no host of the task has used.
    async fn allocate_id(&mut self, role: &str) -> Result<String> {
        let n = self.next_index.entry(role.to_string()).or_insert(0);
        loop {
            *n += 1;
            let id = format!("{role}-{n}");
            if self
                .coord
                .store
                .claim(&self.coord.task.id, &format!("agent-id:{id}"))
                .await?
            {
                return Ok(id);
            }
        }
    }

    async fn finish_agent(
        &mut self,
        joined: std::result::Result<(TaskId, AgentOutcome), tokio::task::JoinError>,
    ) {
        let outcome = match joined {
            Ok((task_id, outcome)) => {
                self.running.remove(&task_id);
                outcome
            }
            Err(e) => {
                let (id, role) = self.running.remove(&e.id()).unwrap_or_default();
                AgentOutcome {
                    id,
                    role,
                    fatal: Some(Error::Coordination(format!(
                        "agent task ended abnormally: {e}"
                    ))),
                    handler_errors: Vec::new(),
                }
            }
        };
        self.coord.activity.idle();
        self.coord.spawner.release();
        self.coord.bus.leave(&outcome.id);
        if let Err(e) = self.coord.bus.release(&outcome.id).await {
            self.record(&outcome.id, &e, true);
        }
        for message in &outcome.handler_errors {
            self.errors.push(ReportedError {
                agent: outcome.id.clone(),
                kind: "script".into(),
                message: message.clone(),
                fatal: false,
                exit_code: crate::error::exit::SCRIPT,
            });
        }
        if let Some(e) = &outcome.fatal {
            self.coord
                .metrics
                .agent(&outcome.id)
                .errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(agent = %outcome.id, "{e}");
            self.record(&outcome.id, e, true);
        }
    }

    fn record(&mut self, agent: &str, e: &Error, fatal: bool) {
        self.errors.push(ReportedError {
            agent: agent.to_string(),
            kind: e.kind().to_string(),
            message: e.to_string(),
            fatal,
            exit_code: e.exit_code(),
        });
    }

    /// True once the task has gone quiet: every agent idle, no spawn pending,
    /// no message queued or in flight, and every agent answered a probe round
    /// during which none of them woke up (so no blackboard change was waiting
    /// for one). Starts a probe round when the rest holds and none is running.
    async fn is_quiet(&mut self) -> bool {
        let activity = &self.coord.activity;
        let settled = activity.busy_count() == 0
            && self.spawn_rx.is_empty()
            && matches!(self.coord.bus.is_drained().await, Ok(true));
        if !settled {
            self.probe = None;
            return false;
        }
        match self.probe {
            Some((generation, epoch)) if activity.epoch() == epoch => {
                activity.answers(generation) >= self.agents.len()
            }
            _ => {
                let epoch = activity.epoch();
                self.probe = Some((activity.probe(), epoch));
                false
            }
        }
    }

    async fn stop_on_timeout(&mut self) {
        let _ = self.stop_tx.send(true);
        self.agents.abort_all();
        let limit_ms = self.coord.task.timeout;
        while let Some(joined) = self.agents.join_next_with_id().await {
            let task_id = match &joined {
                Ok((id, _)) => *id,
                Err(e) => e.id(),
            };
            let Some((id, _)) = self.running.get(&task_id).cloned() else {
                continue;
            };
            if let Ok((_, outcome)) = joined {
                // It finished just as time ran out.
                self.finish_agent(Ok((task_id, outcome))).await;
                continue;
            }
            self.running.remove(&task_id);
            let e = Error::AgentTimeout {
                what: format!("task '{}' (agent {id} still running)", self.coord.task.id),
                limit_ms,
            };
            self.coord.bus.leave(&id);
            let _ = self
                .coord
                .states
                .transition(&id, AgentPhase::Failed, Some(e.to_string()))
                .await;
            self.coord.spawner.release();
            let _ = self.coord.bus.release(&id).await;
            self.record(&id, &e, true);
        }
    }

    fn spawn_metrics_flusher(&self) -> tokio::task::JoinHandle<()> {
        let coord = self.coord.clone();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_millis(coord.config.metrics_interval));
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = coord.metrics.flush(coord.store.as_ref()).await {
                    tracing::warn!("metrics flush failed: {e}");
                }
            }
        })
    }

    async fn report(mut self, started_at: Instant, timed_out: bool) -> Result<RunReport> {
        let coord = self.coord.clone();
        if let Err(e) = coord.metrics.flush(coord.store.as_ref()).await {
            self.record("host", &e, false);
        }
        // Read past the Blackboard, so the report does not count as agents' reads.
        let task_id = &coord.task.id;
        let mut outputs = BTreeMap::new();
        for key in coord.store.bb_keys(task_id, OUTPUT_PREFIX).await? {
            if let Some(v) = coord.store.bb_get(task_id, &key).await? {
                outputs.insert(key[OUTPUT_PREFIX.len()..].to_string(), v);
            }
        }
        for (queue, count) in coord.bus.undelivered().await? {
            self.errors.push(ReportedError {
                agent: "host".into(),
                kind: "undelivered".into(),
                message: format!(
                    "{count} message(s) to '{queue}' were never taken: no agent read them before the task ended"
                ),
                fatal: false,
                exit_code: crate::error::exit::OK,
            });
        }
        let records = coord.states.list().await?;
        let phases: BTreeMap<String, Vec<String>> = records
            .iter()
            .map(|r| {
                (
                    r.id.clone(),
                    r.history.iter().map(|h| h.phase.clone()).collect(),
                )
            })
            .collect();
        let status = if timed_out {
            TaskStatus::Timeout
        } else if self.errors.iter().any(|e| e.fatal) {
            TaskStatus::Failed
        } else {
            TaskStatus::Complete
        };
        Ok(RunReport {
            task_id: coord.task.id.clone(),
            status,
            duration_ms: started_at.elapsed().as_millis() as u64,
            agents_used: self.started.clone(),
            outputs,
            errors: self.errors,
            metrics: coord.metrics.snapshot(&phases, Some(now_ms())),
        })
    }
}

/// An agent's whole life on its task: load, run, and turn a panic in host code
/// into a failure of this agent alone.
async fn run_agent(ctx: Arc<AgentContext>, stop: watch::Receiver<bool>) -> AgentOutcome {
    let id = ctx.id.clone();
    let role = ctx.role.clone();
    let life = async {
        match Agent::load(ctx.clone(), stop) {
            Ok(agent) => agent.run().await,
            Err(e) => {
                ctx.coord.bus.leave(&ctx.id);
                let _ = ctx
                    .coord
                    .states
                    .transition(&ctx.id, AgentPhase::Failed, Some(e.to_string()))
                    .await;
                AgentOutcome {
                    id: ctx.id.clone(),
                    role: ctx.role.clone(),
                    fatal: Some(e),
                    handler_errors: Vec::new(),
                }
            }
        }
    };
    match AssertUnwindSafe(life).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            AgentOutcome {
                id,
                role,
                fatal: Some(Error::Coordination(format!(
                    "host bug while serving this agent: {what}"
                ))),
                handler_errors: Vec::new(),
            }
        }
    }
}
