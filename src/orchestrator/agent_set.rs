//! The run's agents, and the starting of new ones, shared by the
//! orchestrator's task and the tasks of the agents that spawn others.
//!
//! A spawn (`spawn.agent`, a spawn condition met by `spawn.signal`) is done
//! on the task of whoever asks: the id, the record, the place on the bus,
//! then the new agent's own tokio task, spawned from there. It used to go
//! to the orchestrator's task and back, and each of those hops could be a
//! thread wake-up (tens of µs on a quiet machine, where the rest of a spawn
//! is about 150 µs); a task spawned from a worker thread runs next on that
//! same thread, so the new agent now starts as soon as its parent waits.
//!
//! The orchestrator still owns the set: it joins the agents as they end,
//! aborts them, and decides when spawns are served. Those that come before
//! its loop runs wait for it (the initial agents start first); once the
//! loop has ended, they fail as the task shutting down.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Poll, Waker};

use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::{Id as TaskId, JoinError, JoinSet};
use tracing::Instrument;

use super::hand_over::HandOver;
use crate::agent::{AgentOutcome, Halt};
use crate::coordination::journal::{self, Event};
use crate::coordination::{AgentPhase, Coordination, Launcher};
use crate::error::{Error, Result};
use crate::llm::TaskLlm;
use crate::lua_api::AgentContext;
use crate::scripts::ScriptRegistry;

/// How an agent's task ended, as its [`JoinSet`] tells.
pub(super) type Joined = std::result::Result<(TaskId, AgentOutcome), JoinError>;

/// The agents of this process in the task, and how new ones start.
pub(super) struct AgentSet {
    pub(super) coord: Arc<Coordination>,
    pub(super) registry: Arc<ScriptRegistry>,
    llm: TaskLlm,
    stop: watch::Sender<Halt>,
    /// Whether spawns are served: not yet, now, or no more.
    gate: watch::Sender<Gate>,
    /// Spawns begun and not done (the task is not quiet while one is).
    pending: AtomicUsize,
    inner: Mutex<Inner>,
}

/// Whether spawns are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// The orchestrator's loop has not started: spawns wait.
    Waiting,
    Open,
    /// The run is ending: spawns fail.
    Closed,
}

struct Inner {
    tasks: JoinSet<AgentOutcome>,
    /// Agent id and role of each task.
    running: HashMap<TaskId, (String, String)>,
    /// Every agent started here, in order (the report's `agents_used`).
    started: Vec<String>,
    /// The last index given to each role's ids.
    next_index: HashMap<String, u32>,
    /// The roles this process starts, and how it hands over a spawn of
    /// another; `None`: every role.
    served: Option<(Vec<String>, HandOver)>,
    /// Spawns handed over and not started elsewhere yet (each counted busy).
    handed: Vec<String>,
    /// The orchestrator, waiting for an agent to end while there was none.
    waiting: Option<Waker>,
    closed: bool,
    /// The run's span (current at [`AgentSet::open`]): each agent's span is
    /// its child, also when a spawn starts it inside the spawner's host call.
    span: tracing::Span,
}

/// An agent ready to run: registered, on the bus, not yet running.
pub(super) struct Prepared {
    pub(super) ctx: Arc<AgentContext>,
}

impl AgentSet {
    /// An empty set for the run of `coord`, whose agents follow `stop`.
    pub(super) fn new(
        coord: Arc<Coordination>,
        registry: Arc<ScriptRegistry>,
        llm: TaskLlm,
        stop: watch::Sender<Halt>,
    ) -> Arc<AgentSet> {
        Arc::new(AgentSet {
            coord,
            registry,
            llm,
            stop,
            gate: watch::channel(Gate::Waiting).0,
            pending: AtomicUsize::new(0),
            inner: Mutex::new(Inner {
                tasks: JoinSet::new(),
                running: HashMap::new(),
                started: Vec::new(),
                next_index: HashMap::new(),
                served: None,
                handed: Vec::new(),
                waiting: None,
                closed: false,
                span: tracing::Span::none(),
            }),
        })
    }

    /// Spawns are served from now on.
    pub(super) fn open(&self) {
        self.inner.lock().span = tracing::Span::current();
        self.gate.send_if_modified(|gate| {
            let waiting = *gate == Gate::Waiting;
            if waiting {
                *gate = Gate::Open;
            }
            waiting
        });
    }

    /// Spawns fail from now on (those that wait included); no agent is
    /// added to the set any more.
    pub(super) fn close(&self) {
        self.inner.lock().closed = true;
        self.gate.send_replace(Gate::Closed);
    }

    /// Spawns begun and not done.
    pub(super) fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Agents running.
    pub(super) fn len(&self) -> usize {
        self.inner.lock().tasks.len()
    }

    /// No agent runs.
    pub(super) fn is_empty(&self) -> bool {
        self.inner.lock().tasks.is_empty()
    }

    /// The ids of the agents running.
    pub(super) fn running_ids(&self) -> Vec<String> {
        let inner = self.inner.lock();
        inner.running.values().map(|(id, _)| id.clone()).collect()
    }

    /// Every agent started here, in order.
    pub(super) fn started(&self) -> Vec<String> {
        self.inner.lock().started.clone()
    }

    /// The agent id of task `task`, which is no longer running.
    pub(super) fn ended(&self, task: TaskId) -> Option<(String, String)> {
        self.inner.lock().running.remove(&task)
    }

    /// The agent id of task `task`, still counted running.
    pub(super) fn agent_of(&self, task: TaskId) -> Option<(String, String)> {
        self.inner.lock().running.get(&task).cloned()
    }

    /// Aborts every agent's task (they end as the tasks are joined).
    pub(super) fn abort_all(&self) {
        self.inner.lock().tasks.abort_all();
    }

    /// The next agent to end; waits while none runs (a spawn may add one).
    pub(super) async fn next_ended(&self) -> Joined {
        std::future::poll_fn(|cx| {
            let mut inner = self.inner.lock();
            match inner.tasks.poll_join_next_with_id(cx) {
                Poll::Ready(Some(joined)) => Poll::Ready(joined),
                // An empty set keeps no waker: the next agent added wakes this one.
                Poll::Ready(None) => {
                    inner.waiting = Some(cx.waker().clone());
                    Poll::Pending
                }
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// The next agent to end; `None` once none runs.
    pub(super) async fn join_next(&self) -> Option<Joined> {
        std::future::poll_fn(|cx| self.inner.lock().tasks.poll_join_next_with_id(cx)).await
    }

    /// This process starts agents of `roles` only; a spawn of another role
    /// is recorded here and handed over through `hand_over`.
    pub(super) fn serve_only(&self, roles: Vec<String>, hand_over: HandOver) {
        self.inner.lock().served = Some((roles, hand_over));
    }

    /// The roles this process serves and how it hands over the others
    /// (`None`: it serves every role).
    pub(super) fn served(&self) -> Option<(Vec<String>, HandOver)> {
        self.inner.lock().served.clone()
    }

    /// Counts `id`, handed over, busy until it is started elsewhere.
    pub(super) fn add_handed(&self, id: String) {
        self.inner.lock().handed.push(id);
    }

    /// The handed-over agents not known to be started elsewhere yet; the
    /// caller gives back those still waiting with [`Self::add_handed`].
    pub(super) fn take_handed(&self) -> Vec<String> {
        std::mem::take(&mut self.inner.lock().handed)
    }

    /// Some handed-over agent is not started elsewhere yet.
    pub(super) fn has_handed(&self) -> bool {
        !self.inner.lock().handed.is_empty()
    }

    /// Everything but running it: an id, a record, a place on the bus.
    pub(super) async fn prepare(&self, role: &str, parent: Option<&str>) -> Result<Prepared> {
        let id = self.register(role, parent).await?;
        Ok(self.prepared(&id, role))
    }

    /// A slot, an id and a recorded agent of `role`, in INIT; its id.
    async fn register(&self, role: &str, parent: Option<&str>) -> Result<String> {
        self.registry.role(role)?;
        self.coord.spawner.reserve(role)?;
        let id = match self.allocate_id(role).await {
            Ok(id) => id,
            Err(e) => {
                self.coord.spawner.release();
                return Err(e);
            }
        };
        let max = self.coord.config.max_agents;
        if let Err(e) = self.coord.states.register(&id, role, max).await {
            self.coord.spawner.release();
            return Err(e);
        }
        self.journal_spawned(&id, role, parent);
        if let Some(parent) = parent {
            tracing::info!(agent = %id, parent = %parent, "spawned");
        }
        Ok(id)
    }

    /// Journals the start of agent `id` of `role`, which `parent` asked for.
    pub(super) fn journal_spawned(&self, id: &str, role: &str, parent: Option<&str>) {
        self.coord.journal.record_for(id, || Event::Spawned {
            role: role.to_string(),
            parent: parent.map(str::to_string),
        });
    }

    /// A recorded agent on the bus, counted busy, about to run.
    pub(super) fn prepared(&self, id: &str, role: &str) -> Prepared {
        let ctx = AgentContext::new(
            id,
            role,
            self.coord.clone(),
            self.registry.clone(),
            self.llm.clone(),
        );
        self.coord.bus.join(id, role);
        self.coord.activity.busy();
        self.registry.users().started(id, role);
        Prepared { ctx }
    }

    /// Runs a prepared agent on a task of its own; returns its id.
    pub(super) fn launch(&self, prepared: Prepared) -> String {
        let mut inner = self.inner.lock();
        self.launch_locked(&mut inner, prepared)
    }

    fn launch_locked(&self, inner: &mut Inner, prepared: Prepared) -> String {
        let Prepared { ctx } = prepared;
        let (id, role) = (ctx.id.clone(), ctx.role.clone());
        let stop = self.stop.subscribe();
        let span = inner.span.in_scope(|| crate::trace::agent(&id, &role));
        let place = Place(self.coord.clone());
        let life = super::agents::run_agent(ctx, stop);
        let life = async move {
            let _place = place;
            life.await
        }
        .instrument(span);
        // Boxed: the agent's future is several KB (its host calls' state),
        // which tokio moved by value into the task, the task's cell and
        // its output slot: memcpy was 9.5 % of a spawn's instructions.
        let handle = inner.tasks.spawn(Box::pin(journal::scope(&id, life)));
        inner.running.insert(handle.id(), (id.clone(), role));
        inner.started.push(id.clone());
        if let Some(orchestrator) = inner.waiting.take() {
            orchestrator.wake();
        }
        id
    }

    /// `role-N` with the first N no host of the task has used.
    pub(super) async fn allocate_id(&self, role: &str) -> Result<String> {
        loop {
            let n = {
                let mut inner = self.inner.lock();
                let n = inner.next_index.entry(role.to_string()).or_insert(0);
                *n += 1;
                *n
            };
            let id = format!("{role}-{n}");
            let key = format!("agent-id:{id}");
            if self.coord.store.claim(&self.coord.task.id, &key).await? {
                return Ok(id);
            }
        }
    }

    /// Serves a spawn once the gate is open: starts the agent here, or
    /// hands it over when this process does not serve its role.
    async fn spawn(self: Arc<Self>, role: String, parent: Option<String>) -> Result<String> {
        let _pending = Pending::count(&self);
        if !self.opened().await {
            return Err(shutting_down(&role));
        }
        let work = self.clone().start(role, parent);
        let id = finish_detached(work.boxed()).await?;
        // The new agent takes its first turn before the caller goes on, as
        // it did when the orchestrator's task started it: a spec that
        // spawns an agent finds what its `start` did before its first wait.
        // The caller is woken only once this thread has nothing else to
        // run, without a wake-up of another thread.
        tokio::task::yield_now().await;
        Ok(id)
    }

    /// Waits while the gate is [`Gate::Waiting`]; true when it opened.
    async fn opened(&self) -> bool {
        let mut gate = self.gate.subscribe();
        let seen = gate.wait_for(|g| *g != Gate::Waiting).await;
        seen.is_ok_and(|g| *g == Gate::Open)
    }

    /// The part of a spawn that, once begun, is done to its end.
    async fn start(self: Arc<Self>, role: String, parent: Option<String>) -> Result<String> {
        let _pending = Pending::count(&self);
        let parent = parent.as_deref();
        if !self.serves(&role) {
            return self.hand_over_spawn(&role, parent).await;
        }
        let id = self.register(&role, parent).await?;
        if self.launch_unless_closed(&id, &role) {
            return Ok(id);
        }
        // The run ended while the record was written: it never runs.
        self.coord.spawner.release();
        let e = shutting_down(&role);
        let _ = self
            .coord
            .states
            .transition(&id, AgentPhase::Failed, Some(e.to_string()))
            .await;
        Err(e)
    }

    /// Runs agent `id`, recorded, unless the set was closed meanwhile
    /// (false then).
    fn launch_unless_closed(&self, id: &str, role: &str) -> bool {
        let mut inner = self.inner.lock();
        if inner.closed {
            return false;
        }
        let prepared = self.prepared(id, role);
        self.launch_locked(&mut inner, prepared);
        true
    }

    /// True when this process may start an agent of `role`.
    pub(super) fn serves(&self, role: &str) -> bool {
        let inner = self.inner.lock();
        inner
            .served
            .as_ref()
            .is_none_or(|(roles, _)| roles.iter().any(|r| r == role))
    }
}

impl Launcher for AgentSet {
    fn launch(
        self: Arc<Self>,
        role: &str,
        parent: Option<&str>,
    ) -> BoxFuture<'static, Result<String>> {
        self.spawn(role.to_string(), parent.map(str::to_string))
            .boxed()
    }
}

/// Runs `work` to its end even when the caller stops waiting for it: in
/// place when it needs no wait (the embedded store: no task, no thread
/// wake-up), on a task of its own when it does.
async fn finish_detached(mut work: BoxFuture<'static, Result<String>>) -> Result<String> {
    if let Some(done) = (&mut work).now_or_never() {
        return done;
    }
    match tokio::spawn(work).await {
        Ok(done) => done,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::Coordination(format!("spawn cut off: {e}"))),
    }
}

fn shutting_down(role: &str) -> Error {
    Error::Coordination(format!("cannot spawn '{role}': the task is shutting down"))
}

/// An agent's place under `max_agents`, given back when its task ends,
/// however it ends (returns, is aborted, panics): then, not when the
/// orchestrator's task gets round to joining it, so a script that starts
/// short-lived agents one after another never finds the places of those
/// that ended still taken, however far behind the orchestrator is.
struct Place(Arc<Coordination>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.spawner.release();
    }
}

/// Counts a spawn pending while it lives.
struct Pending(Arc<AgentSet>);

impl Pending {
    fn count(set: &Arc<AgentSet>) -> Pending {
        set.pending.fetch_add(1, Ordering::SeqCst);
        Pending(set.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
    }
}
