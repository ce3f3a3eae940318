//! Spawns a process may not start: a fleet worker serving some roles only
//! records the new agent (its id, in INIT) and hands it over to a worker
//! serving its role, which starts it under that id
//! ([`Orchestrator::join_spawned`]). The spawning script gets the id at
//! once, as for a local spawn; until the agent is started elsewhere, this
//! process counts it busy, so the task does not go quiet under it.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::Orchestrator;
use super::agent_set::AgentSet;
use crate::config::Config;
use crate::coordination::AgentPhase;
use crate::error::{Error, Result};
use crate::scripts::ScriptRegistry;
use crate::store::Store;

/// Asks another process to start agent `agent` of role `role` in task
/// `task` (a fleet: a request on the role's joins Stream).
pub type HandOver =
    Arc<dyn Fn(String, String, String) -> BoxFuture<'static, Result<()>> + Send + Sync>;

impl Orchestrator {
    /// This process starts agents of `roles` only; a spawn of another role
    /// is recorded here and handed over through `hand_over`.
    pub fn serve_only(&mut self, roles: Vec<String>, hand_over: HandOver) {
        self.agents.serve_only(roles, hand_over);
    }

    /// Stops counting busy the handed-over agents another process started
    /// (their record moved on from INIT or to another host), or that are
    /// gone.
    pub(super) async fn check_handed(&mut self) {
        let handed = self.agents.take_handed();
        if handed.is_empty() {
            return;
        }
        let me = self.coord.presence.host().to_string();
        for id in handed {
            let started = match self.coord.store.agent_get(&self.coord.task.id, &id).await {
                Ok(Some(r)) => r.host != me || r.phase != AgentPhase::Init.as_str(),
                Ok(None) => true,
                Err(_) => false,
            };
            match started {
                true => self.coord.activity.idle(),
                false => self.agents.add_handed(id),
            }
        }
    }

    /// Prepares to start agent `agent` of task `task_id`, which a process
    /// that does not serve its role recorded and handed over. Fails with a
    /// Coordination error when the agent was started elsewhere already.
    pub async fn join_spawned(
        task_id: &str,
        agent: &str,
        config: Config,
        store: Arc<dyn Store>,
        registry: Arc<ScriptRegistry>,
    ) -> Result<Self> {
        let record = store
            .agent_get(task_id, agent)
            .await?
            .filter(|r| r.phase == AgentPhase::Init.as_str())
            .ok_or_else(|| {
                Error::Coordination(format!(
                    "agent '{agent}' of task '{task_id}' was started already or is gone"
                ))
            })?;
        registry.role(&record.role)?;
        let mut me = Self::joining(task_id, Vec::new(), config, store, registry).await?;
        me.spawned_in = Some(record);
        Ok(me)
    }

    /// Starts the agent handed over to this process, under its id.
    pub(super) async fn start_spawned_in(&mut self) -> Result<()> {
        let Some(record) = self.spawned_in.take() else {
            return Ok(());
        };
        let role = record.role.clone();
        self.coord.spawner.reserve(&role)?;
        self.coord.states.adopt(&record).await?;
        let prepared = self.agents.prepared(&record.id, &role);
        self.agents.launch(prepared);
        Ok(())
    }
}

impl AgentSet {
    /// Records a new agent of `role` and asks a process serving the role to
    /// start it; returns its id.
    pub(super) async fn hand_over_spawn(&self, role: &str, parent: Option<&str>) -> Result<String> {
        let Some((_, ask)) = self.served() else {
            return Err(Error::Coordination(format!(
                "cannot spawn '{role}': nothing to hand it over to"
            )));
        };
        let coord = &self.coord;
        self.registry.role(role)?;
        let id = self.allocate_id(role).await?;
        let max = coord.config.max_agents;
        coord.states.register(&id, role, max).await?;
        self.journal_spawned(&id, role, parent);
        let task = coord.task.id.clone();
        ask(task, role.to_string(), id.clone()).await?;
        tracing::info!(agent = %id, "this worker does not serve role {role}: handed over to one that does");
        coord.activity.busy();
        self.add_handed(id.clone());
        Ok(id)
    }
}
