//! The coordination primitives of one task, built over a [`Store`]:
//! [`Blackboard`], [`MessageBus`], [`AgentStateManager`], [`SpawnController`],
//! [`LockManager`] and [`MetricsCollector`], bundled as [`Coordination`].
//!
//! Nothing here knows of Lua; the Lua API wraps these types.

mod activity;
mod blackboard;
mod bus;
pub mod clock;
pub mod journal;
mod locks;
mod lost;
mod metrics;
pub(crate) mod presence;
pub mod quotas;
mod spawn;
mod state;
mod turns;

use std::sync::Arc;
use std::time::Duration;

pub use activity::Activity;
pub use blackboard::{Blackboard, OUTPUT_PREFIX, stored_outputs};
pub use bus::{BROADCAST, DeadLetter, MessageBus};
pub use journal::Journal;
pub use locks::{LockGrant, LockManager};
pub use lost::LostWrites;
pub use metrics::{
    AgentCounters, AgentMetrics, CoordinationMetrics, HostCounters, MetricsCollector,
};
pub use presence::{LOST_AFTER_BEATS, LostAgent, Presence};
pub use spawn::{Launcher, SpawnController};
pub use state::{AgentPhase, AgentStateManager, PhaseChange, is_live};

use crate::config::Config;
use crate::store::Store;
use crate::task::Task;

pub use clock::now_ms;

/// Everything the agents of one task share.
pub struct Coordination {
    /// The task being run.
    pub task: Arc<Task>,
    /// Resolved settings.
    pub config: Arc<Config>,
    /// The backing store.
    pub store: Arc<dyn Store>,
    /// Shared key/value state.
    pub blackboard: Blackboard,
    /// Messages between agents.
    pub bus: MessageBus,
    /// Agent phases and history.
    pub states: AgentStateManager,
    /// Spawn conditions and the live-agent bound.
    pub spawner: SpawnController,
    /// Named locks.
    pub locks: LockManager,
    /// Counters of the run.
    pub metrics: Arc<MetricsCollector>,
    /// Which agents are busy, for detecting a task that has gone quiet.
    pub activity: Activity,
    /// This process among those sharing the task.
    pub presence: Presence,
    /// The run journal (off until a sink is attached).
    pub journal: Journal,
    /// Set when the run aborts its agents (a second Ctrl-C, the task's
    /// timeout, a fence): their time budgets' hooks then raise at once, so
    /// an agent busy in Lua stops too, not only one waiting on the host.
    pub aborting: Arc<std::sync::atomic::AtomicBool>,
}

impl Coordination {
    /// Builds the primitives of `task` over `store`. Spawns fail until a
    /// run installs its launcher (see [`SpawnController::install`]).
    pub fn new(task: Arc<Task>, config: Arc<Config>, store: Arc<dyn Store>) -> Arc<Coordination> {
        let metrics = Arc::new(MetricsCollector::new(&task.id));
        let ttl = Duration::from_secs(config.blackboard_ttl);
        let presence = Presence::new(
            store.clone(),
            &task.id,
            Duration::from_millis(config.heartbeat_interval),
        );
        let journal = Journal::new(presence.host());
        Arc::new(Coordination {
            blackboard: Blackboard::new(
                store.clone(),
                &task.id,
                ttl,
                metrics.clone(),
                config.max_value_bytes,
                journal.clone(),
                config.quotas,
            ),
            bus: MessageBus::new(
                store.clone(),
                &task.id,
                config.max_attempts,
                config.max_value_bytes,
                Duration::from_millis(config.redelivery_backoff),
                config.quotas,
                journal.clone(),
            )
            .counting_lost(metrics.lost.clone()),
            states: AgentStateManager::new(
                store.clone(),
                &task.id,
                presence.host(),
                journal.clone(),
            ),
            spawner: SpawnController::new(
                &task,
                &config,
                store.clone(),
                metrics.clone(),
                journal.clone(),
            ),
            locks: LockManager::new(
                store.clone(),
                &task.id,
                metrics.clone(),
                config.quotas.max_locks,
                journal.clone(),
            ),
            activity: Activity::default(),
            presence,
            journal,
            aborting: Arc::default(),
            metrics,
            task,
            config,
            store,
        })
    }
}
