//! Adoption: the agents of a process that died (or left) while others go
//! on with the task come back in another process, under their own ids.
//!
//! A fleet's worker runs every task with [`Orchestrator::keep_lost_agents`]:
//! the lease holder that finds a process gone fences it and gives back the
//! messages its agents held, but leaves their records as they were
//! (phase, queue, checkpoint), and the task neither goes quiet nor ends
//! while such an *orphan* waits. The worker that takes over the dead process's work
//! (its Stream entry) runs [`Orchestrator::adopt`]: it fences that process
//! (if no one did yet) and brings its orphans back as `orrery resume`
//! does, each with its id (so its own queue and the messages addressed to
//! it), its stored phase and `on_resume(self, checkpoint)`; the messages it
//! held, given back by whichever process, are delivered to it again
//! (`Store::queue_adopt`). Each orphan is
//! adopted once: the adopter claims `adopt:{agent}:{dead process}` first.

use std::sync::Arc;

use super::Orchestrator;
use crate::config::Config;
use crate::coordination::is_live;
use crate::error::{Error, Result};
use crate::scripts::ScriptRegistry;
use crate::store::{AgentRecord, HostState, Store};

/// The agents of process `host` in task `task_id` that have not ended:
/// those [`Orchestrator::adopt`] brings back.
pub async fn orphans(store: &dyn Store, task_id: &str, host: &str) -> Result<Vec<AgentRecord>> {
    Ok(store
        .agent_list(task_id)
        .await?
        .into_iter()
        .filter(|a| a.host == host && is_live(a))
        .collect())
}

impl Orchestrator {
    /// Agents lost with their process are not failed but wait, with their
    /// records as they were, for another process to adopt them
    /// ([`Orchestrator::adopt`]); the task neither goes quiet nor ends
    /// while one waits (its timeout still applies). For a fleet, where a
    /// worker takes over the work of a dead one.
    pub fn keep_lost_agents(&mut self) {
        self.keep_lost = true;
    }

    /// A joiner (or adopter) stays in the task until it ends, even when its
    /// own agents ended (the run then reports the task's outputs); it may
    /// take the task's lease over like any member. For the worker holding
    /// a fleet task's claim.
    pub fn stay_to_end(&mut self) {
        self.stay = true;
    }

    /// Prepares to adopt the agents process `host` left in task `task_id`
    /// (it died or left while other processes go on): fences `host` unless
    /// it left, then brings back its agents that had not ended, each with
    /// its id, stored phase, queue and checkpoint (see the module doc). The
    /// process joins the task as a member, without the lease. Fails with
    /// BadInput when the store has no such task or a role has no script
    /// here, and with a Coordination error when the task ended.
    pub async fn adopt(
        task_id: &str,
        host: &str,
        config: Config,
        store: Arc<dyn Store>,
        registry: Arc<ScriptRegistry>,
    ) -> Result<Self> {
        let record = store.task_get(task_id).await?.ok_or_else(|| {
            Error::bad_input(
                format!("task {task_id}"),
                format!("no task '{task_id}' in {}", store.describe()),
            )
        })?;
        if !record.is_running() {
            return Err(Error::Coordination(format!(
                "cannot adopt agents of task '{task_id}': its run already ended ({})",
                record.status
            )));
        }
        let agents = orphans(store.as_ref(), task_id, host).await?;
        for a in &agents {
            registry.role(&a.role)?;
        }
        let mut me = Self::resuming(task_id, record, agents, config, store, registry)?;
        me.adopt_from = Some(host.to_string());
        Ok(me)
    }

    /// Fences the process whose agents this one adopts (unless it left or
    /// was fenced already), so it can write nothing more should it wake.
    pub(super) async fn fence_adopted_host(&self, host: &str) -> Result<()> {
        let store = &self.coord.store;
        let id = &self.coord.task.id;
        let Some(mut record) = store
            .host_list(id)
            .await?
            .into_iter()
            .find(|h| h.id == host)
        else {
            return Ok(());
        };
        if record.state != HostState::Alive {
            return Ok(());
        }
        if store.member_fence(id, host).await? {
            tracing::warn!("task '{id}': fencing its process {host} to adopt its agents");
        }
        record.state = HostState::Lost;
        store.heartbeat(id, &record, &[]).await?;
        Ok(())
    }

    /// True for the one process that adopts `record`'s agent from the
    /// process it ran in (see the module doc).
    pub(super) async fn claim_adoption(&self, record: &AgentRecord) -> Result<bool> {
        let name = format!("adopt:{}:{}", record.id, record.host);
        Ok(self.coord.store.claim(&self.coord.task.id, &name).await?)
    }
}
