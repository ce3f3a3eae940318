//! Taking work: new and abandoned tasks from `fleet:submitted` (each run
//! once its claim is taken), then requests to join from
//! `fleet:joins:{role}` for the roles the worker serves, up to its room;
//! each runs on a tokio task of its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::limits::live_agents;
use super::task::{run_join, run_task};
use super::{Orders, Outcome, Running, WorkerOptions};
use crate::error::Result;
use crate::fleet::{Fleet, SUBMITTED, Taken, joins};
use crate::store::Store;

/// Takes new and abandoned tasks, then requests to join, up to the
/// worker's room, and starts each task whose claim it gets and each join.
pub(super) async fn take(
    fleet: &mut Fleet,
    store: &Arc<dyn Store>,
    opts: &Arc<WorkerOptions>,
    running: &mut HashMap<String, Running>,
    done_tx: &mpsc::UnboundedSender<(String, Outcome)>,
) -> Result<()> {
    // Each new task counts one agent at least against the agent limit.
    let mut free = (opts.max_tasks - running.len()).min(
        opts.max_agents
            .map_or(usize::MAX, |m| m - live_agents(running)),
    );
    let starter = Starter {
        fleet: fleet.clone(),
        store: store.clone(),
        opts: opts.clone(),
        done_tx: done_tx.clone(),
    };
    for Taken {
        entry, task: id, ..
    } in take_from(fleet, SUBMITTED, opts, free).await?
    {
        if running.contains_key(&id) {
            continue;
        }
        if !fleet.claim(&id, &opts.id, opts.lease).await? {
            continue; // a live worker runs it
        }
        free = free.saturating_sub(1);
        starter.start(running, id.clone(), id, entry, None);
    }
    // A worker serving any role serves every role asked for.
    let roles = match opts.roles.is_empty() {
        true if free > 0 => fleet.join_roles().await?,
        _ => opts.roles.clone(),
    };
    for role in &roles {
        if free == 0 {
            break;
        }
        let taken = take_from(fleet, &joins(role), opts, free).await?;
        free -= taken.len();
        for Taken {
            entry,
            task,
            agent,
            initial,
        } in taken
        {
            let key = format!("join:{role}:{entry}");
            let join = Join {
                role: role.clone(),
                agent,
                initial,
            };
            starter.start(running, key, task, entry, Some(join));
        }
    }
    Ok(())
}

/// Entries of `stream` for the worker, abandoned ones first, at most `count`.
async fn take_from(
    fleet: &mut Fleet,
    stream: &str,
    opts: &WorkerOptions,
    count: usize,
) -> Result<Vec<Taken>> {
    let mut taken = fleet
        .take_abandoned(stream, &opts.id, opts.lease, count)
        .await?;
    if taken.len() < count {
        let more = count - taken.len();
        taken.extend(
            fleet
                .take_new(stream, &opts.id, more, Duration::ZERO)
                .await?,
        );
    }
    Ok(taken)
}

/// A request to join a task: with an agent of `role` (the task's
/// `initial`-th initial one of it, when the request says), or with `agent`,
/// a spawn another worker handed over.
pub(super) struct Join {
    pub role: String,
    pub agent: Option<String>,
    pub initial: Option<usize>,
}

/// What a task or a join run needs from the worker.
struct Starter {
    fleet: Fleet,
    store: Arc<dyn Store>,
    opts: Arc<WorkerOptions>,
    done_tx: mpsc::UnboundedSender<(String, Outcome)>,
}

impl Starter {
    /// Runs task `id` (or joins it with an agent of `role`) on a tokio task
    /// of its own, under `key` in `running`.
    fn start(
        &self,
        running: &mut HashMap<String, Running>,
        key: String,
        id: String,
        entry: String,
        join: Option<Join>,
    ) {
        let (orders, orders_rx) = watch::channel(Orders::default());
        let coord = Arc::new(Mutex::new(None));
        running.insert(
            key.clone(),
            Running {
                task: id.clone(),
                entry: entry.clone(),
                role: join.as_ref().map(|j| j.role.clone()),
                orders,
                coord: coord.clone(),
            },
        );
        let (fleet, store, opts) = (self.fleet.clone(), self.store.clone(), self.opts.clone());
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let run = (id.as_str(), entry.as_str());
            let outcome = match join {
                Some(join) => run_join(fleet, store, &opts, run, &join, orders_rx, coord).await,
                None => run_task(fleet, store, &opts, run, orders_rx, coord).await,
            };
            let _ = done.send((key, outcome));
        });
    }
}
