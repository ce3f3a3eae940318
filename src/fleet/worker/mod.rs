//! `orrery worker`: takes submitted tasks up to its limit and runs each with
//! the orchestrator, as a member of the task on the shared store, so the
//! fencing, lease and resume of a shared task apply. At every beat (a third
//! of the lease) it renews its claims, re-claims its Stream entries (so they
//! never look abandoned) and records its health; a task whose cancel was
//! asked for is stopped. A task taken over from a dead worker is continued
//! with `Orchestrator::resume` when none of its processes is left, and
//! otherwise the dead worker's agents are adopted (`Orchestrator::adopt`):
//! a worker takes over an entry (a task's or a join's) only when it serves
//! the roles of every agent it would bring back.
//!
//! It looks at its Streams when it starts, when woken (it blocks on a
//! connection of its own in `XREAD` over `fleet:submitted` and
//! `fleet:wake`, see `fleet::wake`; no polling), at every beat (entries
//! abandoned by a dead worker) and when one of its runs ends.
//!
//! A worker with `--roles` that takes a new task needing other roles too
//! runs the ones it serves and asks for the others on `fleet:joins:{role}`;
//! workers serving those join the task with an agent each (a *join*, run
//! beside their tasks and counted with them).
//!
//! Draining (SIGTERM): no more tasks are taken; running tasks go on to
//! their end for up to the drain time; each still running then is left at
//! its agents' callback boundaries (see `Stopper::leave`) and handed over
//! (its entry marked abandoned, its claim dropped, the others woken) so
//! another worker resumes it; a join is left the same way and its request
//! handed over, so another worker adopts its agent. Callbacks still running a third of a
//! lease later are cut off.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, watch};

use super::{Fleet, SUBMITTED, TaskEnd, WakeCursor, WorkerHealth, joins};
use crate::config::Config;
use crate::coordination::{Coordination, now_ms};
use crate::error::Result;
use crate::observe::prometheus::{Exporter, WorkerGauges};
use crate::store::Store;

mod limits;
mod take;
mod task;

pub use limits::resident_memory;
use limits::{full, live_agents};
use take::take;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Its id in the fleet (`hostname:pid`).
    pub id: String,
    /// Most tasks it runs at once.
    pub max_tasks: usize,
    /// Roles it serves; a task needing another is left to other workers. Empty: any.
    pub roles: Vec<String>,
    /// Run every task with this scripts directory instead of the code it was
    /// submitted with (a developer's own worker).
    pub scripts: Option<PathBuf>,
    /// Where submitted code is written out.
    pub cache: PathBuf,
    /// Time after which a silent worker's tasks are taken over.
    pub lease: Duration,
    /// How long a draining worker lets its tasks run before handing them over.
    pub drain: Duration,
    /// No new task while the agents of its running tasks number this many. `None`: no limit.
    pub max_agents: Option<usize>,
    /// No new task while the process's resident memory is above this (bytes). `None`: no limit.
    pub max_memory: Option<u64>,
    /// Settings of every task it runs.
    pub config: Config,
    /// The metrics endpoint (`--metrics-addr`): every task's run is counted
    /// there.
    pub metrics: Option<Exporter>,
    /// Its own gauges on that endpoint, set at every beat.
    pub gauges: Option<WorkerGauges>,
}

/// What a worker did, for its exit line.
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerSummary {
    /// Tasks it ran to their end.
    pub finished: u64,
    /// Tasks it handed over when draining.
    pub handed_over: u64,
}

/// The id of a worker of this process.
pub fn worker_id() -> String {
    format!(
        "{}:{}",
        crate::coordination::presence::hostname(),
        std::process::id()
    )
}

/// A task or a join the worker runs, under its run key (the task id, or
/// `join:{role}:{entry}`).
struct Running {
    /// The task's id.
    task: String,
    /// Its Stream entry.
    entry: String,
    /// For a join, the role its agent plays.
    role: Option<String>,
    orders: watch::Sender<Orders>,
    /// The task's primitives once its orchestrator exists (its live agents).
    coord: Arc<Mutex<Option<Arc<Coordination>>>>,
}

/// What the worker asks of a task it runs.
#[derive(Debug, Clone, Copy, Default)]
struct Orders {
    /// Its cancel was asked for: stop it (its agents run `stop`).
    cancel: bool,
    /// Leave it to another worker: once at a callback boundary, a second
    /// time cutting the callbacks off (see `Stopper::leave`).
    leave: u8,
}

/// What a task's run came to.
enum Outcome {
    /// It ran (or had run) to its end.
    Ended(TaskEnd),
    /// It cannot run here or now: leave it for later or for another worker.
    Retry(String),
    /// The worker drains: the task goes on elsewhere (its agents left at a
    /// callback boundary, or it had not started here).
    HandedOver,
    /// A join's agent ended with the task (or the task had ended).
    Joined,
    /// Its process was fenced (this worker was paused or cut off past its
    /// lease, and another took its work over): nothing is recorded.
    Fenced,
}

impl Running {
    /// The Stream its entry is on.
    fn stream(&self) -> String {
        match &self.role {
            Some(role) => joins(role),
            None => SUBMITTED.to_string(),
        }
    }
}

/// Runs the worker until `drain` turns true and its tasks are finished or
/// handed over.
pub async fn run(
    mut fleet: Fleet,
    store: Arc<dyn Store>,
    opts: WorkerOptions,
    mut drain: watch::Receiver<bool>,
) -> Result<WorkerSummary> {
    let opts = Arc::new(opts);
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut summary = WorkerSummary::default();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, Outcome)>();
    for role in &opts.roles {
        fleet.ensure_group(&joins(role)).await?;
    }
    let mut beat = tokio::time::interval(opts.lease / 3);
    // Blocks on a connection of its own until there may be work (see
    // `fleet::wake`); the worker then looks at its Streams.
    let work = Arc::new(Notify::new());
    let waiter = tokio::spawn(wait_for_work(fleet.another().await?, work.clone()));
    let _waiter = AbortOnDrop(waiter);
    // Looks at once when it starts, then when woken, at every beat (for
    // entries abandoned by a dead worker) and when a task ends (room).
    let mut look = true;
    let mut draining = *drain.borrow();
    // When a draining worker hands its tasks over at their callback
    // boundaries, when it cuts off the callbacks still running, and when it
    // exits whatever still runs (as a kill would).
    let (mut leave_at, mut cut_at, mut exit_at) = (None, None, None);
    loop {
        if look && !draining && running.len() < opts.max_tasks {
            look = false;
            match full(&opts, &running) {
                Some(why) => tracing::debug!("worker {} takes no task: it runs {why}", opts.id),
                None => {
                    if let Err(e) = take(&mut fleet, &store, &opts, &mut running, &done_tx).await {
                        tracing::warn!("worker {} could not take tasks: {e}", opts.id);
                    }
                }
            }
        }
        tokio::select! {
            _ = beat.tick() => {
                look = true;
                if let Err(e) = keep(&mut fleet, &opts, &running, summary.finished, draining).await {
                    tracing::warn!("worker {} could not beat: {e}", opts.id);
                }
            }
            _ = work.notified() => look = true,
            Some((key, outcome)) = done_rx.recv() => {
                // Room again; but what was left for later waits for the
                // next beat (or a wake-up), or this worker would take it
                // straight back.
                look |= !matches!(outcome, Outcome::Retry(_));
                if let Some(run) = running.remove(&key) {
                    settle(&mut fleet, &opts, run, outcome, &mut summary).await;
                }
            }
            changed = drain.changed(), if !draining => {
                if changed.is_err() || *drain.borrow() {
                    draining = true;
                    // Short tasks end here; long ones are handed over.
                    let now = tokio::time::Instant::now();
                    leave_at = Some(now + opts.drain);
                    cut_at = Some(now + opts.drain + opts.lease / 3);
                    exit_at = Some(now + opts.drain + opts.lease * 2 / 3);
                    if let Err(e) = keep(&mut fleet, &opts, &running, summary.finished, draining).await {
                        tracing::warn!("worker {} could not beat: {e}", opts.id);
                    }
                }
            }
            _ = sleep_until(leave_at), if leave_at.is_some() => {
                leave_at = None;
                for run in running.values() {
                    run.orders.send_modify(|o| o.leave += 1);
                }
            }
            _ = sleep_until(cut_at), if cut_at.is_some() && leave_at.is_none() => {
                cut_at = None;
                tracing::warn!(
                    "worker {}: callbacks still running a third of a lease after the drain \
                     ({} ms) are cut off",
                    opts.id,
                    opts.drain.as_millis()
                );
                for run in running.values() {
                    run.orders.send_modify(|o| o.leave += 1);
                }
            }
            _ = sleep_until(exit_at), if exit_at.is_some() => {
                // Tasks that never reached their agents (a resume waiting
                // out a dead worker's heartbeats): handed over as a kill
                // would leave them.
                summary.handed_over += running.len() as u64;
                for run in running.values() {
                    hand_over(&mut fleet, &opts.id, run).await?;
                }
                if !running.is_empty() {
                    fleet.wake("handed over").await?;
                }
                break;
            }
        }
        if draining && running.is_empty() {
            break;
        }
    }
    fleet.leave(&opts.id).await?;
    Ok(summary)
}

/// Wakes the worker (`work`) whenever a task is submitted or work is
/// offered to every worker (see `fleet::wake`), waiting on `fleet`'s own
/// connection.
async fn wait_for_work(mut fleet: Fleet, work: Arc<Notify>) {
    let mut cursor = WakeCursor::default();
    loop {
        match fleet.wait_for_work(&mut cursor, WAIT).await {
            Ok(true) => work.notify_one(),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!("worker cannot wait for work: {e}");
                work.notify_one();
                tokio::time::sleep(WAIT / 10).await;
            }
        }
    }
}

/// The longest single blocking wait for work (a wait with nothing to show
/// ends and starts again).
const WAIT: Duration = Duration::from_secs(10);

/// Aborts a tokio task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sleeps until `at`; never returns for `None`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Records how a task or join of the worker came out.
async fn settle(
    fleet: &mut Fleet,
    opts: &WorkerOptions,
    run: Running,
    outcome: Outcome,
    summary: &mut WorkerSummary,
) {
    let (id, me) = (&run.task, &opts.id);
    let result = match outcome {
        Outcome::Ended(end) => {
            summary.finished += 1;
            if let Some(g) = &opts.gauges {
                g.finished.inc();
            }
            // Not recorded: its entry goes idle, and the worker that takes
            // it finds the task's own record ended.
            let retention = Duration::from_secs(opts.config.retention);
            fleet.finished(id, &run.entry, me, &end, retention).await
        }
        Outcome::Joined => fleet.done_entry(&run.stream(), &run.entry).await,
        Outcome::Fenced => {
            tracing::warn!("worker {me}: task {id} went on without it (fenced)");
            Ok(())
        }
        Outcome::Retry(why) => {
            // Another worker (serving the roles it needs) may take it now;
            // this one looks again at its next beat.
            tracing::warn!("task {id} left for later: {why}");
            hand_over(fleet, me, &run).await
        }
        Outcome::HandedOver => {
            summary.handed_over += 1;
            if let Some(g) = &opts.gauges {
                g.handed_over.inc();
            }
            match hand_over(fleet, me, &run).await {
                // The others take it at once.
                Ok(()) => fleet.wake(&format!("handed over {id}")).await,
                e => e,
            }
        }
    };
    if let Err(e) = result {
        // Its entry goes idle after a lease all the same.
        tracing::warn!("worker {me}: task {id} not settled: {e}");
    }
}

/// Gives a task (or a join) to the other workers at once: its entry looks
/// abandoned, its claim is dropped.
async fn hand_over(fleet: &mut Fleet, worker: &str, run: &Running) -> Result<()> {
    let entry = std::slice::from_ref(&run.entry);
    fleet
        .touch_entries(&run.stream(), worker, entry, 1 << 40)
        .await?;
    if run.role.is_none() {
        fleet.release(&run.task, worker).await?;
    }
    Ok(())
}

/// One beat: the worker's health, its claims and entries kept, cancels passed on.
async fn keep(
    fleet: &mut Fleet,
    opts: &WorkerOptions,
    running: &HashMap<String, Running>,
    finished: u64,
    draining: bool,
) -> Result<()> {
    let health = WorkerHealth {
        id: opts.id.clone(),
        running: running.len() as u64,
        max_tasks: opts.max_tasks as u64,
        finished,
        agents: live_agents(running) as u64,
        rss_mb: resident_memory() >> 20,
        beat_ms: now_ms(),
        draining,
        roles: opts.roles.join(","),
    };
    fleet.beat(&health, opts.lease).await?;
    let mut streams: HashMap<String, Vec<String>> = HashMap::new();
    for run in running.values() {
        streams
            .entry(run.stream())
            .or_default()
            .push(run.entry.clone());
    }
    for (stream, entries) in &streams {
        fleet.touch_entries(stream, &opts.id, entries, 0).await?;
    }
    let mut claims = 0;
    for run in running.values().filter(|r| r.role.is_none()) {
        let id = &run.task;
        if fleet.renew(id, &opts.id, opts.lease).await? {
            claims += 1;
        } else {
            tracing::warn!("worker {} lost its claim of task {id}", opts.id);
        }
        if fleet.task(id).await?.is_some_and(|t| t.cancel) {
            run.orders
                .send_if_modified(|o| !std::mem::replace(&mut o.cancel, true));
        }
    }
    if let Some(gauges) = &opts.gauges {
        gauges.tasks_running.set(health.running as i64);
        gauges.max_tasks.set(health.max_tasks as i64);
        gauges.agents.set(health.agents as i64);
        gauges.memory.set(resident_memory() as i64);
        gauges.claims.set(claims);
        gauges.draining.set(draining as i64);
    }
    Ok(())
}
