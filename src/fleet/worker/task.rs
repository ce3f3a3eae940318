//! One task on a worker: its code (submitted, or the worker's own
//! `--scripts`), a new run or the resume of one another worker left, the
//! worker's orders (cancel, leave) passed on, and how it ended.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::{Orders, Outcome, WorkerOptions};
use crate::config::Config;
use crate::coordination::Coordination;
use crate::error::{Error, ErrorKind, Result};
use crate::fleet::{Fleet, FleetTask, TaskEnd};
use crate::orchestrator::{Orchestrator, Stopper};
use crate::report::{RunReport, TaskStatus};
use crate::scripts::ScriptRegistry;
use crate::store::{RunStatus, Store};
use crate::task::Task;

/// Runs (or continues) task `id` to its end.
pub(super) async fn run_task(
    mut fleet: Fleet,
    store: Arc<dyn Store>,
    opts: &WorkerOptions,
    id: &str,
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
        if !opts.roles.is_empty() {
            let needs = task_roles(&task, &registry);
            if let Some(role) = needs.iter().find(|r| !opts.roles.contains(r)) {
                return Ok(Outcome::Retry(format!(
                    "this worker does not serve role {role}"
                )));
            }
        }
        if orders.borrow().leave > 0 {
            return Ok(Outcome::HandedOver);
        }
        fleet.started(id, &opts.id).await?;
        let mut orchestrator = match store.task_get(id).await? {
            None => Orchestrator::new(task, config, store, registry)?,
            Some(r) if r.is_running() || r.status == RunStatus::Stopping => {
                Orchestrator::resume(id, config, store, registry).await?
            }
            // Its last worker ran it to its end but died before recording it.
            Some(r) => return Ok(Outcome::Ended(stored_end(r.status))),
        };
        *coord.lock() = Some(orchestrator.coordination().clone());
        if opts.scripts.is_some() {
            // A developer's own worker: edits reach its running tasks.
            orchestrator.reload_on_edit(crate::reload::ReloadOptions::default())?;
        }
        if let Some(metrics) = &opts.metrics {
            metrics.attach(orchestrator.coordination());
        }
        let forward = tokio::spawn(forward_orders(orders, orchestrator.stopper()));
        let report = orchestrator.run().await;
        forward.abort();
        let report = report?;
        if report.status == TaskStatus::HandedOver {
            return Ok(Outcome::HandedOver);
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
            })
        }
        Err(e) => Outcome::Retry(e.to_string()),
    }
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
/// stored status alone.
fn stored_end(status: RunStatus) -> TaskEnd {
    TaskEnd {
        state: "finished".into(),
        status: status.to_string(),
        exit_code: match status {
            RunStatus::Complete => crate::error::exit::OK,
            RunStatus::Timeout => crate::error::exit::TIMEOUT,
            RunStatus::Interrupted => crate::error::exit::INTERRUPTED,
            _ => crate::error::exit::TASK_FAILED,
        },
        outputs: serde_json::Value::Null,
    }
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
    }
}
