//! Runs one task: starts the agents, serves spawn requests, watches for the
//! end (every agent done, the task gone quiet, the timeout, or a
//! [`Stopper`]), and reports.
//!
//! In watch mode ([`Orchestrator::watch`]) a [`Reloader`] keeps the agents'
//! code in step with the files, and a quiet task does not end: it runs until
//! its agents finish, the timeout, or a stop from outside (Ctrl-C in the CLI).
//!
//! A task in a shared store can span processes: the one that runs it owns it
//! and decides its end; others join it with agents of given roles (see
//! [`shared`]).

mod adopt;
mod agent_set;
mod agents;
mod hand_over;
mod observed;
mod quiet;
mod shared;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::agent::Halt;
use crate::config::Config;
use crate::coordination::{AgentPhase, Coordination, now_ms};
use crate::error::{Error, ErrorKind, Result};
use crate::llm::{BudgetSpent, LlmClient, TaskLlm};
use crate::reload::{ReloadEvent, ReloadOptions, Reloader};
use crate::report::{ReportedError, RunReport, TaskStatus};
use crate::scripts::ScriptRegistry;
use crate::store::{AgentRecord, HostRecord, Store};
use crate::task::Task;

pub use adopt::orphans;
use agent_set::AgentSet;
pub use hand_over::HandOver;
use quiet::QUIET_POLL;
pub use shared::Mode;

/// Runs one task to its end.
pub struct Orchestrator {
    coord: Arc<Coordination>,
    registry: Arc<ScriptRegistry>,
    /// This process's agents, and the starting of spawned ones.
    agents: Arc<AgentSet>,
    stop_tx: watch::Sender<Halt>,
    errors: Vec<ReportedError>,
    llm: TaskLlm,
    budget_rx: mpsc::UnboundedReceiver<BudgetSpent>,
    /// The refused LLM call that ended the task, once there is one.
    budget_error: Option<ReportedError>,
    reloader: Option<Reloader>,
    stop_requests: (
        mpsc::UnboundedSender<StopRequest>,
        mpsc::UnboundedReceiver<StopRequest>,
    ),
    mode: Mode,
    /// Other live processes take part in the task.
    shared: bool,
    /// The end was decided (quiet, a stop, or the owner's end for a joiner).
    stopping: bool,
    /// The quiescence probe in flight: its generation, the epoch it started at,
    /// and what the other processes were doing then.
    probe: Option<(u64, u64, quiet::RemoteActivity)>,
    /// This process was declared lost and fenced: it stops at once and
    /// writes nothing more.
    fenced: bool,
    /// This process holds the task's lease: it decides the end, records the
    /// task and its end, and reaps lost members (see [`shared`]).
    lead: bool,
    /// The agents `orrery resume` brings back (their stored records).
    resume: Vec<crate::store::AgentRecord>,
    /// Held open (see [`Orchestrator::hold_open`]).
    held: bool,
    /// This process leaves the task to another (see [`Stopper::leave`]).
    leaving: bool,
    /// Its agents that left with their records as stored.
    left: Vec<String>,
    /// Watch mode (see [`Orchestrator::watch`]).
    watching: bool,
    /// The roles this owner starts, when not all (see [`Orchestrator::share_roles`]).
    local_roles: Option<Vec<String>>,
    /// Roles other processes were asked to run: the task neither goes quiet
    /// nor ends while one has no agent that joined and was not lost.
    remote_roles: Vec<String>,
    /// After this process noticed that the server lost the task's data, the
    /// end is not decided before this moment (see [`shared`]).
    quiet_not_before: Option<tokio::time::Instant>,
    /// Agents lost with their process wait for another to adopt them
    /// instead of failing (see [`Orchestrator::keep_lost_agents`]).
    keep_lost: bool,
    /// A joiner that stays until the task ends (see [`Orchestrator::stay_to_end`]).
    stay: bool,
    /// The process whose agents this one adopts (see [`Orchestrator::adopt`]).
    adopt_from: Option<String>,
    /// The handed-over agent this process starts (see
    /// [`Orchestrator::join_spawned`]).
    spawned_in: Option<crate::store::AgentRecord>,
}

/// The roles `task` starts up front: its `agents`, or every role of
/// `registry` that no spawn condition starts.
pub fn task_initial_roles(task: &Task, registry: &ScriptRegistry) -> Vec<String> {
    task.agents.clone().unwrap_or_else(|| {
        registry
            .roles()
            .into_iter()
            .filter(|r| !task.spawn.iter().any(|c| &c.agent == r))
            .collect()
    })
}

/// Fails (bad input naming `origin`'s `agents`) when `task` starts more
/// agents up front than `max_agents` lets live: known before anything
/// runs, it started some, then ended with no report (and on a shared
/// store, a task record left `running`).
pub fn check_initial_agents(
    task: &Task,
    config: &Config,
    registry: &ScriptRegistry,
    origin: &str,
) -> Result<()> {
    let initial = task_initial_roles(task, registry).len();
    if initial <= config.max_agents {
        return Ok(());
    }
    let whence = if task.agents.is_some() {
        "its agents list"
    } else {
        "every role of the scripts directory (no agents list)"
    };
    Err(Error::bad_input(
        format!("{origin}: agents"),
        format!(
            "{initial} agents start up front ({whence}) but max_agents is {}: \
             raise max_agents (--max-agents, ORRERY_MAX_AGENTS) or start fewer",
            config.max_agents
        ),
    ))
}

/// The initial roles of `task` that have no agent among `recorded` (one
/// per occurrence): a run cut off while it recorded its first agents.
pub fn never_started(
    task: &Task,
    registry: &ScriptRegistry,
    recorded: &[crate::store::AgentRecord],
) -> Vec<String> {
    let mut have: Vec<&str> = recorded.iter().map(|a| a.role.as_str()).collect();
    let mut missing = Vec::new();
    for role in task_initial_roles(task, registry) {
        match have.iter().position(|r| *r == role) {
            Some(i) => {
                have.swap_remove(i);
            }
            None => missing.push(role),
        }
    }
    missing
}

/// The claim on the task's `n`-th initial agent of `role` (0, 1...) that
/// the process starting it late takes first: a worker answering the
/// owner's request for it, or a resume of a run cut off before it
/// recorded it. So it starts once.
pub fn initial_claim(role: &str, n: usize) -> String {
    format!("initial:{role}:{n}")
}

/// Of `missing` (see [`never_started`]), those this resume may start: the
/// places of their roles among the task's initial agents that it could
/// claim (see [`initial_claim`]); a place a worker's join holds is started
/// there.
async fn claim_never_started(
    store: &dyn Store,
    task: &Task,
    registry: &ScriptRegistry,
    missing: Vec<String>,
) -> Result<Vec<String>> {
    let initial = task_initial_roles(task, registry);
    let mut mine = Vec::new();
    let mut roles = missing.clone();
    roles.sort();
    roles.dedup();
    for role in roles {
        let mut wanted = missing.iter().filter(|r| **r == role).count();
        let places = initial.iter().filter(|r| **r == role).count();
        for n in 0..places {
            if wanted == 0 {
                break;
            }
            if store
                .claim_as(&task.id, &initial_claim(&role, n), RESUMER)
                .await?
            {
                mine.push(role.clone());
                wanted -= 1;
            }
        }
    }
    Ok(mine)
}

/// Who holds the claims of a resume: any resume (they are one at a time).
const RESUMER: &str = "resume";

/// Stops a running task from outside, as Ctrl-C does: the first
/// [`stop`](Self::stop) lets every agent finish the callback it is in and run
/// its `stop` callback; a second one aborts the agents still running.
#[derive(Clone)]
pub struct Stopper(mpsc::UnboundedSender<StopRequest>);

/// What a [`Stopper`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopRequest {
    Stop,
    Leave,
}

impl Stopper {
    /// Asks the run to stop (see [`Stopper`]); does nothing once it has ended.
    pub fn stop(&self) {
        let _ = self.0.send(StopRequest::Stop);
    }

    /// Asks this process to leave the task to another without ending it (a
    /// worker's hand-over): its agents take no new event, finish the
    /// callback they are in and end without `stop` and without a final
    /// phase; the messages they held are given back; the process records
    /// itself `left` and gives up the task's lease, so a `resume` takes the
    /// task over at once. The run then returns a report with the status
    /// [`TaskStatus::HandedOver`]. A second call cuts off the callbacks still
    /// running (their agents are resumed from their records all the same).
    /// A task whose end was already decided ends as it would have.
    pub fn leave(&self) {
        let _ = self.0.send(StopRequest::Leave);
    }
}

impl Orchestrator {
    /// Prepares a run of `task`. Fails with BadInput naming the field when the
    /// task names a role that has no script, and when the LLM settings
    /// (`config.llm`) are unusable (bad URL, unreadable replay file), before
    /// anything is stored.
    pub fn new(
        task: Task,
        config: Config,
        store: Arc<dyn Store>,
        registry: Arc<ScriptRegistry>,
    ) -> Result<Self> {
        let client = LlmClient::new(config.llm.clone())
            .map_err(|e| Error::bad_llm_settings("LLM settings", e))?;
        Self::with_mode(task, config, store, registry, client, Mode::Owner)
    }

    /// [`Orchestrator::new`] with the LLM client given rather than built from
    /// `config.llm` (the test runner's scripted answers).
    pub fn with_llm(
        task: Task,
        config: Config,
        store: Arc<dyn Store>,
        registry: Arc<ScriptRegistry>,
        client: LlmClient,
    ) -> Result<Self> {
        Self::with_mode(task, config, store, registry, client, Mode::Owner)
    }

    /// Holds the run open for a driver outside it (a test): no roles are
    /// started up front, and the run does not end when its agents end or
    /// the task goes quiet, only at a [`Stopper`]'s stop (or the timeout).
    /// The driver starts agents through [`Coordination::spawner`]'s requests
    /// (`spawn.agent` of a script acting for it).
    pub fn hold_open(&mut self) {
        self.held = true;
    }

    /// The task's LLM handle, for an agent context made outside the run.
    pub fn task_llm(&self) -> TaskLlm {
        self.llm.clone()
    }

    fn with_mode(
        task: Task,
        config: Config,
        store: Arc<dyn Store>,
        registry: Arc<ScriptRegistry>,
        client: LlmClient,
        mode: Mode,
    ) -> Result<Self> {
        task.check_roles(&format!("task '{}'", task.id), |role| {
            registry.role(role).map(|_| ())
        })?;
        let (llm, budget_rx) = TaskLlm::new(client);
        let coord = Coordination::new(Arc::new(task), Arc::new(config), store);
        let stop_tx = watch::channel(Halt::Go).0;
        let agents = AgentSet::new(
            coord.clone(),
            registry.clone(),
            llm.clone(),
            stop_tx.clone(),
        );
        // Taken out when this run is dropped (see `Drop`), which also
        // breaks the cycle through the coordination.
        coord.spawner.install(Some(agents.clone()));
        coord.bus.set_known_roles(registry.roles());
        if let Mode::Joiner { owner_roles, .. } = &mode {
            coord.bus.set_remote_roles(owner_roles.clone());
        }
        Ok(Orchestrator {
            coord,
            registry,
            agents,
            stop_tx,
            errors: Vec::new(),
            llm,
            budget_rx,
            budget_error: None,
            reloader: None,
            stop_requests: mpsc::unbounded_channel(),
            mode,
            shared: false,
            stopping: false,
            probe: None,
            fenced: false,
            lead: false,
            resume: Vec::new(),
            held: false,
            leaving: false,
            left: Vec::new(),
            watching: false,
            local_roles: None,
            remote_roles: Vec::new(),
            quiet_not_before: None,
            keep_lost: false,
            stay: false,
            adopt_from: None,
            spawned_in: None,
        })
    }

    /// The task's LLM client (its mode, usage totals and token budget).
    pub fn llm(&self) -> &LlmClient {
        &self.llm.client
    }

    /// Watch mode: starts hot reload of the scripts and stdlib directories for
    /// this run, and keeps the task running when it goes quiet. Fails when a
    /// directory cannot be watched.
    pub fn watch(&mut self, options: ReloadOptions) -> Result<()> {
        self.reload_on_edit(options)?;
        self.watching = true;
        Ok(())
    }

    /// Hot reload of the scripts and stdlib directories for this run,
    /// without watch mode: the task still ends when it goes quiet (a
    /// worker running its developer's own `--scripts`). Fails when a
    /// directory cannot be watched.
    pub fn reload_on_edit(&mut self, options: ReloadOptions) -> Result<()> {
        let reloader = Reloader::start(self.registry.clone(), self.coord.clone(), options)?;
        self.reloader = Some(reloader);
        Ok(())
    }

    /// Reloads from now on; `None` unless [`watch`](Self::watch) or
    /// [`reload_on_edit`](Self::reload_on_edit) was called.
    pub fn reload_events(&self) -> Option<tokio::sync::broadcast::Receiver<ReloadEvent>> {
        self.reloader.as_ref().map(Reloader::subscribe)
    }

    /// A handle that stops the run from outside.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop_requests.0.clone())
    }

    /// The task's primitives (subscribe to phase changes here before [`run`](Self::run)).
    pub fn coordination(&self) -> &Arc<Coordination> {
        &self.coord
    }

    /// The roles started up front: the task's `agents`, or every role that no
    /// spawn condition starts; for a joiner, the roles it was asked for.
    pub fn initial_roles(&self) -> Vec<String> {
        if let Mode::Joiner { roles, .. } = &self.mode {
            return roles.clone();
        }
        if let Some(local) = &self.local_roles {
            return local.clone();
        }
        task_initial_roles(&self.coord.task, &self.registry)
    }

    /// Shares the task's initial roles with other processes (a fleet
    /// worker serving some of them): this owner starts the agents of
    /// `local` only, and the task neither goes quiet nor ends while a role
    /// of `remote` has no agent that joined from elsewhere
    /// (`Orchestrator::join`) and was not lost with its process (another
    /// is expected in its place). The task's timeout still applies.
    pub fn share_roles(&mut self, local: Vec<String>, remote: Vec<String>) {
        self.local_roles = Some(local);
        self.remote_roles = remote;
    }

    /// True when every role of [`share_roles`](Self::share_roles)'s
    /// `remote` has an agent that joined and was not lost, and (with
    /// [`keep_lost_agents`](Self::keep_lost_agents)) no agent lost with its
    /// process waits for adoption; `false` when the store cannot tell.
    async fn remote_roles_served(&self) -> bool {
        if !self.needs_members() {
            return true;
        }
        self.members()
            .await
            .is_some_and(|(hosts, agents)| self.roles_served(&hosts, &agents, now_ms()))
    }

    /// True when telling whether the task may end takes the store's
    /// records of every member (see [`remote_roles_served`](Self::remote_roles_served)).
    fn needs_members(&self) -> bool {
        !self.remote_roles.is_empty() || self.keep_lost
    }

    /// The task's processes, then its agents, as the store has them now;
    /// `None` when it cannot tell.
    async fn members(&self) -> Option<(Vec<HostRecord>, Vec<AgentRecord>)> {
        let (store, id) = (&self.coord.store, &self.coord.task.id);
        let hosts = store.host_list(id).await.ok()?;
        let agents = store.agent_list(id).await.ok()?;
        Some((hosts, agents))
    }

    /// [`remote_roles_served`](Self::remote_roles_served) on records read
    /// at `now`.
    fn roles_served(&self, hosts: &[HostRecord], agents: &[AgentRecord], now: u64) -> bool {
        let alive: Vec<&str> = hosts
            .iter()
            .filter(|h| self.coord.presence.is_alive(h, now))
            .map(|h| h.id.as_str())
            .collect();
        // An agent that completed served its role; one that failed for its
        // lost process, or whose process went silent, did not.
        let serves = |a: &AgentRecord| match a.phase.parse::<AgentPhase>() {
            Ok(AgentPhase::Complete) => true,
            Ok(AgentPhase::Failed) => !a.error.as_deref().is_some_and(|e| e.starts_with("lost:")),
            _ => alive.contains(&a.host.as_str()),
        };
        // An agent waiting for adoption (its process gone) is not done.
        let orphaned =
            |a: &AgentRecord| crate::coordination::is_live(a) && !alive.contains(&a.host.as_str());
        if self.keep_lost && agents.iter().any(orphaned) {
            return false;
        }
        self.remote_roles
            .iter()
            .all(|role| agents.iter().any(|a| &a.role == role && serves(a)))
    }

    /// [`run`](Self::run) without the journal's and the trace's start and end.
    async fn run_to_end(mut self) -> Result<RunReport> {
        let started_at = Instant::now();
        // Before the task is claimed in the store: nothing has run yet.
        if !self.held && self.mode.is_owner() {
            let task = &self.coord.task;
            let origin = format!("task '{}'", task.id);
            check_initial_agents(task, &self.coord.config, &self.registry, &origin)?;
        }
        let deadline = self.open().await?;
        self.journal_started();
        let roles = if self.held {
            Vec::new()
        } else {
            self.initial_roles()
        };
        self.start_agents(&roles).await?;
        self.start_resumed().await?;
        self.start_spawned_in().await?;
        self.beat().await;
        let flusher = self.spawn_metrics_flusher();
        let deadline = tokio::time::sleep_until(deadline);
        tokio::pin!(deadline);
        let mut heartbeat = tokio::time::interval(self.coord.presence.interval());
        let mut quiet_poll = tokio::time::interval(QUIET_POLL);
        let mut end = End::Finished;
        let watching = self.watching;
        self.agents.open();
        loop {
            // The fence first: an agent's refused write confirmed by a beat
            // can also have ended this process's last agent.
            if self.fenced {
                // No stop callbacks: they would act on a task that went on
                // without this process.
                let fenced = self.coord.presence.fenced().await;
                tracing::error!("{fenced}");
                // First among the fatal errors, so the exit code is the
                // fence's (an agent whose write was refused first failed
                // with a Coordination error).
                self.errors
                    .insert(0, ReportedError::of("host", &fenced, true));
                self.abort_all(|_| fenced.clone()).await;
                break;
            }
            if self.is_over().await {
                break;
            }
            tokio::select! {
                joined = self.agents.next_ended() => self.finish_agent(joined).await,
                Some(spent) = self.budget_rx.recv() => {
                    if self.stop_on_budget(spent) {
                        self.stop().await;
                    }
                }
                _ = self.coord.activity.changed(), if !watching && !self.held && !self.leaving => {
                    if self.lead && self.is_quiet().await {
                        self.stop().await;
                    }
                }
                _ = self.coord.activity.moved(), if !self.lead => self.beat().await,
                _ = heartbeat.tick() => self.on_heartbeat().await,
                _ = quiet_poll.tick(), if !watching && !self.held && (self.shared || self.quiet_not_before.is_some()) && self.lead && !self.stopping && !self.leaving => {
                    if self.is_quiet().await {
                        self.stop().await;
                    }
                }
                Some(request) = self.stop_requests.1.recv() => match request {
                    StopRequest::Leave if self.leaving => {
                        self.abandon_all().await;
                        break;
                    }
                    // The end was decided: the task ends as it would have.
                    StopRequest::Leave if self.stopping => {}
                    StopRequest::Leave => {
                        self.leaving = true;
                        end = End::Left;
                        let _ = self.stop_tx.send(Halt::Leave);
                    }
                    // Leaving: the process that resumes the task sees the cancel.
                    StopRequest::Stop if self.leaving => {}
                    StopRequest::Stop if end == End::Interrupted => {
                        self.abort_all(|id| Error::Interrupted { agent: id.to_string() }).await;
                        break;
                    }
                    StopRequest::Stop => {
                        end = End::Interrupted;
                        self.stop().await;
                    }
                },
                _ = &mut deadline => {
                    end = End::TimedOut;
                    let limit_ms = self.coord.task.timeout;
                    let task = self.coord.task.id.clone();
                    let before = self.errors.len();
                    self.abort_all(|id| Error::AgentTimeout {
                        what: format!("task '{task}' (agent {id} still running)"),
                        limit_ms,
                    }).await;
                    self.put_timeout_first(before, &task, limit_ms);
                    break;
                }
            }
        }
        self.agents.close();
        self.reloader = None;
        flusher.abort();
        let report = self.report(started_at, end).await;
        self.close(report.as_ref().ok()).await;
        report
    }

    /// True when this process has nothing left to wait for: its agents ended
    /// and, for the owner, no other process takes part any more (while one
    /// does, the owner waits for the whole task to go quiet).
    async fn is_over(&mut self) -> bool {
        if self.held && !self.stopping && !self.leaving {
            return false;
        }
        if !self.agents.is_empty() {
            return false;
        }
        if self.stopping || self.leaving {
            return true;
        }
        if self.agents.has_handed() {
            // Not started elsewhere yet: counted busy here until it is.
            return false;
        }
        if !self.lead {
            // One that stays waits for the lease holder's end (or for the
            // lease, when that holder goes).
            return !self.stay;
        }
        if self
            .quiet_not_before
            .is_some_and(|t| tokio::time::Instant::now() < t)
        {
            // Other processes may not have beaten again yet (see `shared`).
            return false;
        }
        if !self.needs_members() {
            self.refresh_shared().await;
            return !self.shared;
        }
        // Both questions from one reading: asked apart, a process leaving
        // the task between them (its agents waiting for another to adopt
        // them) looked alive to the first and gone to the second, and the
        // task ended without its agents.
        let Some((hosts, agents)) = self.members().await else {
            return false;
        };
        let now = now_ms();
        let presence = &self.coord.presence;
        self.shared = hosts.iter().any(|h| presence.is_other_alive(h, now));
        !self.shared && self.roles_served(&hosts, &agents, now)
    }

    /// Stops every agent of this process (and, for the owner, records the end
    /// so joined processes stop theirs).
    async fn stop(&mut self) {
        let _ = self.stop_tx.send(Halt::Stop);
        if !self.stopping {
            self.stopping = true;
            if self.lead {
                self.mark_stopping().await;
            }
        }
    }

    /// Records the first LLM call refused for a spent token budget; true when
    /// the task must stop for it. The task then fails with that error, and the
    /// agents stop at their next event (what they run now finishes; further
    /// LLM calls are refused).
    fn stop_on_budget(&mut self, spent: BudgetSpent) -> bool {
        if self.budget_error.is_some() {
            return false;
        }
        let agent = spent.agent.clone();
        let spent = Error::from(spent);
        tracing::error!("{spent}");
        self.budget_error = Some(ReportedError::of(&agent, &spent, true));
        true
    }

    fn record(&mut self, agent: &str, e: &Error, fatal: bool) {
        self.errors.push(ReportedError::of(agent, e, fatal));
    }

    /// After the task's timeout cut off the agents (their errors from
    /// `from` on): the first fatal error is a timeout, so it says why the
    /// run exits 4. There may be none among the agents' — none ran here any
    /// more (an owner whose joined processes do the work), each stopped
    /// cleanly as the stop reached it before the abort, or `[success]`
    /// allows failed agents — and the task's own timeout is reported then.
    fn put_timeout_first(&mut self, from: usize, task: &str, limit_ms: u64) {
        let cut_off = self.errors[from..]
            .iter()
            .position(|e| e.fatal && e.kind == ErrorKind::Timeout);
        let first = match cut_off {
            Some(i) => self.errors.remove(from + i),
            None => {
                let e = Error::AgentTimeout {
                    what: format!("task '{task}'"),
                    limit_ms,
                };
                tracing::error!("{e}");
                ReportedError::of("host", &e, true)
            }
        };
        self.errors.insert(0, first);
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

    async fn report(&mut self, started_at: Instant, end: End) -> Result<RunReport> {
        let coord = self.coord.clone();
        if self.fenced {
            // Nothing more is written; and nothing read now is this process's to report.
        } else if let Err(e) = coord.metrics.flush(coord.store.as_ref()).await {
            self.record("host", &e, false);
        }
        // Writes the store did not apply are lost work, even when the
        // scripts caught their errors: the run is not complete.
        if let Some(lost) = coord.metrics.lost.reported() {
            tracing::error!("{}", lost.message);
            self.errors.push(lost);
        }
        // A recording asked for and not made is found out at replay time
        // otherwise: said in the report (not fatal: the calls succeeded).
        if let Some((count, why)) = self.llm.client.unrecorded() {
            self.errors.push(ReportedError {
                agent: "host".into(),
                kind: ErrorKind::LlmRecord,
                message: format!(
                    "{why}: {} not recorded",
                    crate::text::plural(count, "answer", "answers")
                ),
                fatal: false,
                allowed: false,
                count: 1,
                exit_code: crate::error::exit::OK,
            });
        }
        // Read past the blackboard's counters: they were just flushed, and the
        // store's totals must equal the report's.
        let outputs = coord.blackboard.outputs_uncounted().await?;
        let undelivered = match end {
            End::Left => Vec::new(),
            _ => coord.bus.undelivered().await?,
        };
        for (queue, count) in undelivered {
            self.errors.push(ReportedError {
                agent: "host".into(),
                kind: ErrorKind::Undelivered,
                message: format!(
                    "{} to '{queue}' never taken: no agent read {} before the task ended",
                    crate::text::plural(count as u64, "message", "messages"),
                    if count == 1 { "it" } else { "them" }
                ),
                fatal: false,
                allowed: false,
                count: 1,
                exit_code: crate::error::exit::OK,
            });
        }
        if end == End::Left {
            // What is undelivered or missing is the resuming process's to see.
            return Ok(RunReport {
                task_id: coord.task.id.clone(),
                status: TaskStatus::HandedOver,
                duration_ms: started_at.elapsed().as_millis() as u64,
                agents_used: self.agents.started(),
                outputs,
                errors: crate::report::collapse(std::mem::take(&mut self.errors)),
                metrics: coord.metrics.snapshot(&BTreeMap::new(), Some(now_ms())),
            });
        }
        self.report_dead_letters().await?;
        if end == End::Finished {
            self.report_missing_outputs(&outputs);
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
        // A refusal may have come in after the last agent ended.
        while let Ok(spent) = self.budget_rx.try_recv() {
            let _ = self.stop_on_budget(spent);
        }
        // The spent budget is why the task failed, whatever the agents then
        // raised: it goes first, so it sets the exit code.
        if let Some(spent) = self.budget_error.take() {
            self.errors.insert(0, spent);
        }
        let status = if end == End::Left {
            TaskStatus::HandedOver
        } else if end == End::TimedOut {
            TaskStatus::Timeout
        } else if end == End::Interrupted {
            TaskStatus::Interrupted
        } else if self.errors.iter().any(|e| e.fatal) {
            TaskStatus::Failed
        } else {
            TaskStatus::Complete
        };
        Ok(RunReport {
            task_id: coord.task.id.clone(),
            status,
            duration_ms: started_at.elapsed().as_millis() as u64,
            agents_used: self.agents.started(),
            outputs,
            errors: crate::report::collapse(std::mem::take(&mut self.errors)),
            metrics: coord.metrics.snapshot(&phases, Some(now_ms())),
        })
    }
}

impl Orchestrator {
    /// Adds the task's dead letters to the report: each fails the task, with
    /// the exit code of the error its handler last raised, unless the task's
    /// `[success]` allows dead letters.
    async fn report_dead_letters(&mut self) -> Result<()> {
        let allowed = self.coord.task.success.allow_dead_letters;
        for dead in self.coord.bus.dead_letters().await? {
            let e = &dead.envelope;
            // No message id: identical dead letters fold into one counted entry.
            let what = format!(
                "message '{}' from {} to '{}' was dead-lettered after {}",
                e.kind,
                e.from,
                dead.queue,
                crate::text::plural(e.attempts, "attempt", "attempts")
            );
            let mut reported = match &dead.last_failure {
                Some((agent, cause)) => {
                    let mut r = ReportedError::of(agent, cause, !allowed);
                    let first = r.message.lines().next().unwrap_or_default().to_string();
                    r.message = format!("{what}; last error: {first}");
                    r
                }
                None => ReportedError {
                    agent: "host".into(),
                    kind: ErrorKind::DeadLetter,
                    message: what,
                    fatal: !allowed,
                    allowed: false,
                    count: 1,
                    exit_code: crate::error::exit::SCRIPT,
                },
            };
            reported.allowed = allowed;
            self.errors.push(reported);
        }
        Ok(())
    }

    /// Adds an error for each output the task's `[success]` requires and the
    /// run did not record.
    fn report_missing_outputs(&mut self, outputs: &BTreeMap<String, serde_json::Value>) {
        let required = self.coord.task.success.outputs.clone();
        for name in required.iter().filter(|n| !outputs.contains_key(*n)) {
            self.errors.push(ReportedError {
                agent: "host".into(),
                kind: ErrorKind::Incomplete,
                message: format!(
                    "required output '{name}' was not recorded (the task's [success] outputs \
                     lists it; an agent records it with task.output('{name}', value))"
                ),
                fatal: true,
                allowed: false,
                count: 1,
                exit_code: crate::error::exit::INCOMPLETE,
            });
        }
    }
}

impl Drop for Orchestrator {
    /// Spawns fail from now on, and agents still running are aborted (a
    /// run cut off, or never run).
    fn drop(&mut self) {
        self.coord.spawner.install(None);
        self.agents.close();
        self.agents.abort_all();
    }
}

/// Why the run loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Every agent ended (on its own, or stopped because the task went quiet).
    Finished,
    /// The task's timeout passed.
    TimedOut,
    /// A [`Stopper`] (Ctrl-C) stopped it.
    Interrupted,
    /// This process left the task to another ([`Stopper::leave`]).
    Left,
}
