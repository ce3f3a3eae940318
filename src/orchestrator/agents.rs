//! The orchestrator's side of an agent's life: starting one (an id no host of
//! the task has used, a context, a tokio task), taking in how it ended, and
//! aborting the ones still running when the task must end now.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;
use tokio::task::Id as TaskId;

use super::Orchestrator;
use crate::agent::{Agent, AgentOutcome};
use crate::coordination::AgentPhase;
use crate::error::{Error, ErrorKind, Result};
use crate::lua_api::AgentContext;
use crate::report::ReportedError;

impl Orchestrator {
    pub(super) async fn start_agent(&mut self, role: &str, parent: Option<&str>) -> Result<String> {
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
        let ctx = AgentContext::new(
            &id,
            role,
            self.coord.clone(),
            self.registry.clone(),
            self.llm.clone(),
        );
        self.coord.bus.join(&id, role);
        self.coord.activity.busy();
        self.registry.users().started(&id, role);
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

    pub(super) async fn finish_agent(
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
        self.registry.users().ended(&outcome.id);
        if let Err(e) = self.coord.bus.release(&outcome.id).await {
            self.record(&outcome.id, &e, true);
        }
        for message in &outcome.handler_errors {
            self.errors.push(ReportedError {
                agent: outcome.id.clone(),
                kind: ErrorKind::Script,
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

    /// Aborts every agent still running; each gets the error `why(id)`.
    pub(super) async fn abort_all(&mut self, why: impl Fn(&str) -> Error) {
        let _ = self.stop_tx.send(true);
        self.agents.abort_all();
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
            let e = why(&id);
            // Off the bus before the final phase: whoever sees it can no longer send to it.
            self.coord.bus.leave(&id);
            let _ = self
                .coord
                .states
                .transition(&id, AgentPhase::Failed, Some(e.to_string()))
                .await;
            self.coord.spawner.release();
            self.registry.users().ended(&id);
            let _ = self.coord.bus.release(&id).await;
            self.record(&id, &e, true);
        }
    }
}

/// An agent's whole life on its task: load, run, and turn a panic in host code
/// or a life longer than `agent_timeout` into a failure of this agent alone.
async fn run_agent(ctx: Arc<AgentContext>, stop: watch::Receiver<bool>) -> AgentOutcome {
    let life = async {
        match Agent::load(ctx.clone(), stop) {
            Ok(agent) => agent.run().await,
            Err(e) => fail_agent(&ctx, e).await,
        }
    };
    let limit_ms = ctx.coord.config.agent_timeout;
    let life = AssertUnwindSafe(life).catch_unwind();
    match tokio::time::timeout(Duration::from_millis(limit_ms), life).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(panic)) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            let e = Error::Coordination(format!("host bug while serving this agent: {what}"));
            fail_agent(&ctx, e).await
        }
        Err(_) => {
            let e = Error::AgentTimeout {
                what: format!("agent {} (setting agent_timeout)", ctx.id),
                limit_ms,
            };
            fail_agent(&ctx, e).await
        }
    }
}

/// Records that the agent failed with `e` (unless it already ended) and
/// reports the failure.
async fn fail_agent(ctx: &AgentContext, e: Error) -> AgentOutcome {
    ctx.coord.bus.leave(&ctx.id);
    let ended = matches!(
        ctx.coord.states.get(&ctx.id).await,
        Ok(Some(r)) if r.phase.parse::<AgentPhase>().is_ok_and(AgentPhase::is_terminal)
    );
    if !ended {
        let reason = e.to_string().lines().next().unwrap_or_default().to_string();
        let _ = ctx
            .coord
            .states
            .transition(&ctx.id, AgentPhase::Failed, Some(reason))
            .await;
    }
    AgentOutcome {
        id: ctx.id.clone(),
        role: ctx.role.clone(),
        fatal: Some(e),
        handler_errors: Vec::new(),
    }
}
