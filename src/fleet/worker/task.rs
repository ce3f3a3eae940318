//! One task on a worker: its code (submitted, or the worker's own
//! `--scripts`), a new run or the resume of one another worker left, the
//! worker's orders (cancel, leave) passed on, and how it ended.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::take::Join;
use super::{Orders, Outcome, WorkerOptions};
use crate::config::Config;
use crate::coordination::{AgentPhase, Coordination};
use crate::error::{Error, ErrorKind, Result};
use crate::fleet::{Fleet, FleetTask, SUBMITTED, TaskEnd, joins};
use crate::orchestrator::{HandOver, Orchestrator, Stopper, initial_claim, never_started, orphans};
use crate::report::{RunReport, TaskStatus};
use crate::scripts::ScriptRegistry;
use crate::store::{HostState, RunStatus, Store};
use crate::task::Task;

/// Runs a task's or a join's orchestrator as the worker's: its coordination
/// shown to the worker's beat, spawns of roles it does not serve handed
/// over to workers that do, edits of a developer's own `--scripts`
/// reloaded into it, its metrics served, and the worker's orders passed on.
async fn run_on_worker(
    mut orchestrator: Orchestrator,
    fleet: &Fleet,
    opts: &WorkerOptions,
    orders: watch::Receiver<Orders>,
    coord: &Mutex<Option<Arc<Coordination>>>,
) -> Result<RunReport> {
    // A dead worker's agents wait for another to adopt them.
    orchestrator.keep_lost_agents();
    if !opts.roles.is_empty() {
        let fleet = fleet.clone();
        let ask: HandOver = Arc::new(move |task, role, agent| {
            let mut fleet = fleet.clone();
            Box::pin(async move { fleet.ask_join_agent(&task, &role, &agent).await })
        });
        orchestrator.serve_only(opts.roles.clone(), ask);
    }
    *coord.lock() = Some(orchestrator.coordination().clone());
    if opts.scripts.is_some() {
        orchestrator.reload_on_edit(crate::reload::ReloadOptions::default())?;
    }
    if let Some(metrics) = &opts.metrics {
        metrics.attach(orchestrator.coordination());
    }
    let forward = tokio::spawn(forward_orders(orders, orchestrator.stopper()));
    let report = orchestrator.run().await;
    forward.abort();
    report
}

/// Runs (or continues) task `id`, of Stream entry `entry`, to its end.
pub(super) async fn run_task(
    mut fleet: Fleet,
    store: Arc<dyn Store>,
    opts: &WorkerOptions,
    (id, entry): (&str, &str),
    orders: watch::Receiver<Orders>,
    coord: Arc<Mutex<Option<Arc<Coordination>>>>,
) -> Outcome {
    let attempt = async {
        let Some(record) = fleet.task(id).await? else {
            return Ok(Outcome::Retry(format!("task {id} is not in the store")));
        };
        if let Some(end) = recorded_end(&record) {
            return Ok(Outcome::Ended(end));
        }
        let task: Task = serde_json::from_str(&record.definition).map_err(|e| {
            Error::bad_input(format!("task {id}"), format!("unreadable definition: {e}"))
        })?;
        let config = code_of(&mut fleet, opts, &record).await?;
        let registry = Arc::new(ScriptRegistry::load(&config.scripts, &config.stdlib)?);
        let previous = store.task_get(id).await?;
        // The process that ran this entry before, when others go on with
        // the task: its agents are adopted here, the others stay where they run.
        let adopted = match &previous {
            Some(r) if r.is_running() => {
                let before = fleet.ran_by(id, SUBMITTED, entry).await?;
                others_go_on(&store, &config, id, before).await?
            }
            _ => None,
        };
        let share = match (&previous, &adopted) {
            (None, _) => share(&task, &registry, &opts.roles),
            (Some(_), Some(host)) => adoptable(&store, id, host, &opts.roles).await?,
            (Some(_), None) => resumable(&store, (id, &task, &registry), &opts.roles).await?,
        };
        let share = match share {
            Ok(share) => share,
            Err(role) => {
                return Ok(Outcome::Retry(format!(
                    "this worker does not serve role {role}"
                )));
            }
        };
        if orders.borrow().leave > 0 {
            return Ok(Outcome::HandedOver);
        }
        fleet.started(id, &opts.id).await?;
        let mut orchestrator = match (previous, adopted) {
            (None, _) => Orchestrator::new(task, config, store, registry)?,
            (Some(_), Some(host)) => {
                Orchestrator::adopt(id, &host, config, store, registry).await?
            }
            (Some(r), None) if r.is_running() || r.status == RunStatus::Stopping => {
                Orchestrator::resume(id, config, store, registry).await?
            }
            // Its last worker ran it to its end but died before recording it.
            (Some(r), None) => {
                return Ok(Outcome::Ended(
                    stored_end(store.as_ref(), id, r.status).await?,
                ));
            }
        };
        // Stays to the end, whoever holds the lease, to record the outputs.
        orchestrator.stay_to_end();
        let host = orchestrator.coordination().presence.host().to_string();
        fleet.ran_as(id, SUBMITTED, entry, &host).await?;
        if let Some(Share { local, remote }) = share {
            let mut roles: Vec<String> = remote.clone();
            roles.sort();
            roles.dedup();
            for role in &roles {
                let count = remote.iter().filter(|r| *r == role).count();
                fleet.ask_join(id, role, count).await?;
            }
            orchestrator.share_roles(local, roles);
        }
        let report = run_on_worker(orchestrator, &fleet, opts, orders, &coord).await?;
        if report.status == TaskStatus::HandedOver {
            return Ok(Outcome::HandedOver);
        }
        if taken_over(&mut fleet, &report, (id, SUBMITTED, entry), &host).await? {
            return Ok(Outcome::Fenced);
        }
        let cancel = fleet.task(id).await?.is_some_and(|t| t.cancel);
        Ok::<_, Error>(Outcome::Ended(ended(report, cancel)))
    };
    match attempt.await {
        Ok(outcome) => outcome,
        Err(e) if e.kind() == ErrorKind::BadInput || e.kind() == ErrorKind::Script => {
            Outcome::Ended(TaskEnd {
                state: "finished".into(),
                status: format!("failed: {e}"),
                exit_code: e.exit_code(),
                outputs: serde_json::Value::Null,
                error: Some(e.to_string()),
            })
        }
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

/// True when the run of `host` was fenced, or another worker took its
/// entry over meanwhile (this one was paused past its lease): its end is
/// not this worker's to record.
async fn taken_over(
    fleet: &mut Fleet,
    report: &RunReport,
    (id, stream, entry): (&str, &str, &str),
    host: &str,
) -> Result<bool> {
    let fenced = |e: &crate::report::ReportedError| {
        e.kind == ErrorKind::Fenced || e.message.contains("fenced:")
    };
    if report.errors.iter().any(fenced) {
        return Ok(true);
    }
    Ok(fleet
        .ran_by(id, stream, entry)
        .await?
        .is_some_and(|h| h != host))
}

/// The end a task's record already holds (a finished task whose entry came
/// back, a cancelled one), if any.
fn recorded_end(record: &FleetTask) -> Option<TaskEnd> {
    let finished = record.state == "finished";
    if !finished && record.state != "cancelled" && !record.cancel {
        return None;
    }
    Some(TaskEnd {
        state: if finished { "finished" } else { "cancelled" }.into(),
        status: record
            .status
            .clone()
            .unwrap_or_else(|| "interrupted".into()),
        exit_code: record.exit_code.unwrap_or(crate::error::exit::INTERRUPTED),
        outputs: record.outputs.clone().unwrap_or(serde_json::Value::Null),
        error: record.error.clone(),
    })
}

/// The worker's settings with the task's code: the worker's own
/// `--scripts`, or the submitted bundle written out under its cache.
async fn code_of(fleet: &mut Fleet, opts: &WorkerOptions, record: &FleetTask) -> Result<Config> {
    let mut config = opts.config.clone();
    match &opts.scripts {
        Some(dir) => config.scripts = dir.clone(),
        None => {
            let bundle = fleet.bundle(&record.bundle).await?;
            let cache = opts.cache.clone();
            let (scripts, stdlib) = tokio::task::spawn_blocking(move || bundle.materialize(&cache))
                .await
                .map_err(|e| Error::Coordination(e.to_string()))??;
            config.scripts = scripts;
            config.stdlib = stdlib;
        }
    }
    Ok(config)
}

/// The end of a task its last worker ran to its end without recording it:
/// the report and its errors died with that worker, so the code of the
/// stored status alone, and the outputs the agents stored (they were
/// recorded as `null`: a complete task whose outputs were lost).
async fn stored_end(store: &dyn Store, id: &str, status: RunStatus) -> Result<TaskEnd> {
    let outputs = crate::coordination::stored_outputs(store, id).await?;
    Ok(TaskEnd {
        state: "finished".into(),
        status: status.to_string(),
        exit_code: match status {
            RunStatus::Complete => crate::error::exit::OK,
            RunStatus::Timeout => crate::error::exit::TIMEOUT,
            RunStatus::Interrupted => crate::error::exit::INTERRUPTED,
            _ => crate::error::exit::TASK_FAILED,
        },
        outputs: serde_json::to_value(outputs).unwrap_or_default(),
        error: None,
    })
}

/// Passes the worker's orders on to the run: a cancel stops it, each leave
/// asks it to leave (see `Stopper::leave`).
async fn forward_orders(mut orders: watch::Receiver<Orders>, stopper: Stopper) {
    let (mut cancelled, mut left) = (false, 0);
    loop {
        let now = *orders.borrow_and_update();
        if now.cancel && !cancelled {
            cancelled = true;
            stopper.stop();
        }
        while left < now.leave {
            left += 1;
            stopper.leave();
        }
        if orders.changed().await.is_err() {
            return;
        }
    }
}

/// Joins task `id` with an agent of `join.role` (Stream entry `entry` of
/// `fleet:joins:{role}`), or with the spawn `join.agent` another worker
/// handed over, until the task ends. An entry another worker ran before is
/// taken over: the agents that worker's process left are adopted here,
/// under their ids (see `Orchestrator::adopt`).
pub(super) async fn run_join(
    mut fleet: Fleet,
    store: Arc<dyn Store>,
    opts: &WorkerOptions,
    (id, entry): (&str, &str),
    join: &Join,
    orders: watch::Receiver<Orders>,
    coord: Arc<Mutex<Option<Arc<Coordination>>>>,
) -> Outcome {
    let role = join.role.as_str();
    let attempt = async {
        let Some(record) = fleet.task(id).await? else {
            return Ok(Outcome::Joined); // gone: nothing to join
        };
        if recorded_end(&record).is_some() {
            return Ok(Outcome::Joined);
        }
        match store.task_get(id).await? {
            // Its owner has not opened the run yet.
            None => return Ok(Outcome::Retry(format!("task {id} has not started yet"))),
            Some(r) if !r.is_running() => return Ok(Outcome::Joined),
            Some(_) => {}
        }
        let stream = joins(role);
        let mut before = fleet.ran_by(id, &stream, entry).await?;
        if let Some(host) = &before {
            match adoptable(&store, id, host, &opts.roles).await? {
                Err(role) => {
                    return Ok(Outcome::Retry(format!(
                        "this worker does not serve role {role}"
                    )));
                }
                // A handed-over spawn the worker that took it died before
                // starting: started here as if first asked.
                Ok(_) if orphans(store.as_ref(), id, host).await?.is_empty() => {
                    match &join.agent {
                        Some(_) => before = None,
                        // Its agents ended, or another worker adopted them.
                        None => return Ok(Outcome::Joined),
                    }
                }
                Ok(_) => {}
            }
        }
        if let (None, Some(agent)) = (&before, &join.agent) {
            let waiting = store.agent_get(id, agent).await?;
            if waiting.is_none_or(|r| r.phase != AgentPhase::Init.as_str()) {
                return Ok(Outcome::Joined); // started elsewhere already, or gone
            }
        }
        if let (None, None, Some(n)) = (&before, &join.agent, join.initial) {
            // The entry holds the claim, so a worker taking it over after
            // this one died goes on; a resume that started the agent holds
            // it otherwise.
            if !store.claim_as(id, &initial_claim(role, n), entry).await? {
                return Ok(Outcome::Joined);
            }
        }
        if orders.borrow().leave > 0 {
            return Ok(Outcome::HandedOver);
        }
        let config = code_of(&mut fleet, opts, &record).await?;
        let registry = Arc::new(ScriptRegistry::load(&config.scripts, &config.stdlib)?);
        let orchestrator = match &before {
            Some(host) => Orchestrator::adopt(id, host, config, store.clone(), registry).await?,
            None => match &join.agent {
                Some(agent) => {
                    Orchestrator::join_spawned(id, agent, config, store.clone(), registry).await?
                }
                None => {
                    let roles = vec![role.to_string()];
                    Orchestrator::join(id, roles, config, store.clone(), registry).await?
                }
            },
        };
        let host = orchestrator.coordination().presence.host().to_string();
        fleet.ran_as(id, &stream, entry, &host).await?;
        let report = run_on_worker(orchestrator, &fleet, opts, orders, &coord).await?;
        // Left at a callback boundary: another worker serving the role
        // takes the entry over and adopts the agent (its record stays
        // live, so the task waits for it).
        if report.status == TaskStatus::HandedOver {
            return Ok(Outcome::HandedOver);
        }
        if taken_over(&mut fleet, &report, (id, &stream, entry), &host).await? {
            return Ok(Outcome::Fenced);
        }
        Ok::<_, Error>(Outcome::Joined)
    };
    match attempt.await {
        Ok(outcome) => outcome,
        Err(e) if e.kind() == ErrorKind::BadInput || e.kind() == ErrorKind::Script => {
            tracing::warn!("cannot join task {id} as {role}: {e}");
            Outcome::Joined
        }
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

/// How a worker serving `roles` (empty: any) shares a new run of a task:
/// `Ok(None)` when it runs it whole; `Ok(Some(share))` when it starts the
/// initial agents of `share.local` and asks others for those of
/// `share.remote` (only when it serves every role the task's spawn
/// conditions start and one initial role at least); `Err(role)` naming a
/// role it cannot leave to others.
fn share(
    task: &Task,
    registry: &ScriptRegistry,
    roles: &[String],
) -> std::result::Result<Option<Share>, String> {
    let unserved = |r: &&String| !roles.is_empty() && !roles.contains(r);
    let needs = task_roles(task, registry);
    let Some(first) = needs.iter().find(unserved) else {
        return Ok(None);
    };
    if let Some(spawned) = task.spawn.iter().map(|c| &c.agent).find(unserved) {
        return Err(spawned.clone());
    }
    let initial = task.agents.clone().unwrap_or_else(|| {
        registry
            .roles()
            .into_iter()
            .filter(|r| !task.spawn.iter().any(|c| &c.agent == r))
            .collect()
    });
    let (remote, local): (Vec<String>, Vec<String>) =
        initial.into_iter().partition(|r| unserved(&r));
    if local.is_empty() {
        return Err(first.clone());
    }
    Ok(Some(Share { local, remote }))
}

/// Whether a worker serving `roles` (empty: any) can resume task `id`: it
/// brings back every agent of the task that has not ended, and starts the
/// initial ones its last worker died before recording, so it must serve
/// all their roles (`Err(role)` names one it does not).
async fn resumable(
    store: &Arc<dyn Store>,
    (id, task, registry): (&str, &Task, &ScriptRegistry),
    roles: &[String],
) -> Result<std::result::Result<Option<Share>, String>> {
    let agents = store.agent_list(id).await?;
    let live = agents
        .iter()
        .filter(|a| crate::coordination::is_live(a))
        .map(|a| a.role.clone());
    let mut needed = live.chain(never_started(task, registry, &agents));
    Ok(
        match needed.find(|r| !roles.is_empty() && !roles.contains(r)) {
            Some(role) => Err(role),
            None => Ok(None),
        },
    )
}

/// The process `before` that ran a task's entry, when other processes of
/// the task are alive (they go on with it, and the agents of `before` are
/// to be adopted); `None` when none is (the task is resumed whole).
async fn others_go_on(
    store: &Arc<dyn Store>,
    config: &Config,
    id: &str,
    before: Option<String>,
) -> Result<Option<String>> {
    let Some(before) = before else {
        return Ok(None);
    };
    let lost_after = config.heartbeat_interval * crate::coordination::LOST_AFTER_BEATS;
    let now = crate::coordination::now_ms();
    let others = store.host_list(id).await?.into_iter().any(|h| {
        h.id != before
            && h.state == HostState::Alive
            && now.saturating_sub(h.heartbeat_ms) <= lost_after
    });
    Ok(others.then_some(before))
}

/// Whether a worker serving `roles` (empty: any) can adopt the agents
/// process `host` left in task `id`: it must serve all their roles
/// (`Err(role)` names one it does not).
async fn adoptable(
    store: &Arc<dyn Store>,
    id: &str,
    host: &str,
    roles: &[String],
) -> Result<std::result::Result<Option<Share>, String>> {
    let agents = orphans(store.as_ref(), id, host).await?;
    Ok(
        match agents
            .iter()
            .find(|a| !roles.is_empty() && !roles.contains(&a.role))
        {
            Some(a) => Err(a.role.clone()),
            None => Ok(None),
        },
    )
}

/// A task shared with other workers: the initial roles this one starts,
/// and those it asks others for (one entry per agent).
struct Share {
    local: Vec<String>,
    remote: Vec<String>,
}

/// The roles a task starts: its `agents` (or every role of its code) and
/// those its spawn conditions start.
fn task_roles(task: &Task, registry: &ScriptRegistry) -> Vec<String> {
    let mut roles = task.agents.clone().unwrap_or_else(|| registry.roles());
    roles.extend(task.spawn.iter().map(|c| c.agent.clone()));
    roles.sort();
    roles.dedup();
    roles
}

fn ended(report: RunReport, cancel: bool) -> TaskEnd {
    TaskEnd {
        state: if cancel { "cancelled" } else { "finished" }.into(),
        status: serde_json::to_value(report.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        exit_code: report.exit_code(),
        outputs: serde_json::to_value(&report.outputs).unwrap_or_default(),
        error: (report.status == TaskStatus::Failed)
            .then(|| report.errors.iter().find(|e| e.fatal))
            .flatten()
            .map(|e| format!("{}: {}", e.agent, e.message)),
    }
}
