//! The orchestrator's side of an agent's life: starting its own (the
//! initial roles, the resumed ones), taking in how each ended, and aborting
//! the ones still running when the task must end now. The set of agents and
//! the starting of a spawned one are in [`super::agent_set`].

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;

use super::Orchestrator;
use super::agent_set::{Joined, Prepared};
use crate::agent::{Agent, AgentOutcome, Halt};
use crate::coordination::AgentPhase;
use crate::error::{Error, Result};
use crate::lua_api::AgentContext;
use crate::report::ReportedError;

impl Orchestrator {
    /// Starts the agents of `roles` together: every one of them is on the bus
    /// (and in its role's line, see `coordination::turns`) before the first
    /// one's `start` runs, so work a starting agent sends to a pool goes to
    /// the whole pool.
    pub(super) async fn start_agents(&mut self, roles: &[String]) -> Result<()> {
        let mut ready = Vec::with_capacity(roles.len());
        for role in roles {
            ready.push(self.agents.prepare(role, None).await?);
        }
        for agent in ready {
            self.agents.launch(agent);
        }
        Ok(())
    }

    /// Brings back the agents `orrery resume` (or an adoption, see
    /// `adopt`) found: each keeps its id, its stored phase and its queue
    /// (the messages it held are given back, so they are delivered again),
    /// and runs `on_resume(self, checkpoint)` if its script has one
    /// (`start` otherwise). One another process brought back from the same
    /// process first is skipped.
    pub(super) async fn start_resumed(&mut self) -> Result<()> {
        for record in std::mem::take(&mut self.resume) {
            let (id, role) = (record.id.clone(), record.role.clone());
            self.registry.role(&role)?;
            if !self.claim_adoption(&record).await? {
                tracing::info!(agent = %id, "already brought back by another process");
                continue;
            }
            self.coord.spawner.reserve(&role)?;
            self.coord.states.adopt(&record).await?;
            // What it held, or what the process it left gave back on its
            // own queue, is delivered here.
            self.coord.store.queue_adopt(&self.coord.task.id, &id);
            let released = self.coord.bus.release(&id).await?;
            let checkpoint = self
                .coord
                .store
                .checkpoint_get(&self.coord.task.id, &id)
                .await?
                .and_then(|json| serde_json::from_str(&json).ok());
            tracing::info!(agent = %id, phase = %record.phase, released, "resumed");
            let ctx = AgentContext::new(
                &id,
                &role,
                self.coord.clone(),
                self.registry.clone(),
                self.llm.clone(),
            );
            ctx.local.lock().resumed = Some(checkpoint);
            self.coord.bus.join(&id, &role);
            self.coord.activity.busy();
            self.registry.users().started(&id, &role);
            self.agents.launch(Prepared { ctx });
        }
        Ok(())
    }

    /// Takes in how an agent ended: gives back what it held (the messages
    /// it read ahead, the locks it still holds unless it left the task to
    /// another process) and records its errors (its place under `max_agents` it gave back itself, see
    /// `agent_set::Place`).
    pub(super) async fn finish_agent(&mut self, joined: Joined) {
        let outcome = match joined {
            Ok((task_id, outcome)) => {
                self.agents.ended(task_id);
                outcome
            }
            Err(e) => {
                let (id, role) = self.agents.ended(e.id()).unwrap_or_default();
                AgentOutcome {
                    id,
                    role,
                    fatal: Some(Error::Coordination(format!(
                        "agent task ended abnormally: {e}"
                    ))),
                    handler_errors: Vec::new(),
                    left: false,
                }
            }
        };
        self.coord.activity.idle();
        self.coord.bus.leave(&outcome.id);
        self.registry.users().ended(&outcome.id);
        // The messages it read ahead or kept aside go back to its queue (for
        // the process that resumes it, when it left).
        if let Err(e) = self.coord.bus.release(&outcome.id).await {
            self.record(&outcome.id, &e, true);
        }
        if outcome.left {
            self.left.push(outcome.id.clone());
        } else if let Err(e) = self.coord.locks.release_held(&outcome.id).await {
            // Not lost work: the lock's TTL frees it.
            self.record(&outcome.id, &e, false);
        }
        let success = self.coord.task.success.clone();
        for h in &outcome.handler_errors {
            // A message's fate is decided by its redeliveries (see the dead
            // letters in the report); a watch's change is lost for good.
            let fatal = h.lost && !success.allow_dead_letters;
            let mut reported = ReportedError::of(&outcome.id, &h.error, fatal);
            reported.message = format!("{}: {}", h.during, reported.message);
            self.errors.push(reported);
        }
        if let Some(e) = &outcome.fatal
            && e.to_string().contains("fenced:")
        {
            // A write of this agent was refused as a fenced member's: the
            // heartbeat confirms it and ends the run.
            self.beat().await;
        }
        if let Some(e) = &outcome.fatal {
            self.coord
                .metrics
                .agent(&outcome.id)
                .errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(agent = %outcome.id, "{e}");
            self.record_failed_agent(&outcome.id, e);
        }
    }

    /// Records the error an agent ended with: it fails the task unless the
    /// task's `[success]` allows failed agents.
    pub(super) fn record_failed_agent(&mut self, agent: &str, e: &Error) {
        let allowed = self.coord.task.success.allow_failed_agents;
        let mut reported = ReportedError::of(agent, e, !allowed);
        reported.allowed = allowed;
        self.errors.push(reported);
    }

    /// Aborts every agent still running; each gets the error `why(id)`.
    pub(super) async fn abort_all(&mut self, why: impl Fn(&str) -> Error) {
        let _ = self.stop_tx.send(Halt::Stop);
        // An agent busy in Lua is not waiting where an abort reaches it:
        // its budget's hook raises now (see `Coordination::aborting`).
        self.coord
            .aborting
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.agents.close();
        self.agents.abort_all();
        while let Some(joined) = self.agents.join_next().await {
            let task_id = match &joined {
                Ok((id, _)) => *id,
                Err(e) => e.id(),
            };
            let Some((id, _)) = self.agents.agent_of(task_id) else {
                continue;
            };
            if let Ok((_, outcome)) = joined {
                // It finished just as time ran out.
                self.finish_agent(Ok((task_id, outcome))).await;
                continue;
            }
            self.agents.ended(task_id);
            let e = why(&id);
            // Off the bus before the final phase: whoever sees it can no longer send to it.
            self.coord.bus.leave(&id);
            let _ = self
                .coord
                .states
                .transition(&id, AgentPhase::Failed, Some(e.to_string()))
                .await;
            self.registry.users().ended(&id);
            let _ = self.coord.bus.release(&id).await;
            // A failure is left to the locks' TTLs: the run fails anyway.
            let _ = self.coord.locks.release_held(&id).await;
            self.record_failed_agent(&id, &e);
        }
    }
}

impl Orchestrator {
    /// Aborts every agent still running without a final phase: this process
    /// leaves the task, and the one that resumes it brings them back from
    /// their records (what their cut-off callbacks did is not undone, as
    /// after a kill).
    pub(super) async fn abandon_all(&mut self) {
        self.coord
            .aborting
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.agents.close();
        self.agents.abort_all();
        while let Some(joined) = self.agents.join_next().await {
            if let Ok((task_id, outcome)) = joined {
                self.finish_agent(Ok((task_id, outcome))).await;
                continue;
            }
            let task_id = joined.err().map(|e| e.id());
            let Some((id, _)) = task_id.and_then(|t| self.agents.ended(t)) else {
                continue;
            };
            self.coord.bus.leave(&id);
            self.registry.users().ended(&id);
            let _ = self.coord.bus.release(&id).await;
            tracing::warn!(agent = %id, "cut off mid-callback: this process leaves the task");
            self.left.push(id);
        }
    }
}

/// An agent's whole life on its task: load, run, and turn a panic in host code
/// or a life longer than `agent_timeout` into a failure of this agent alone.
pub(super) async fn run_agent(ctx: Arc<AgentContext>, stop: watch::Receiver<Halt>) -> AgentOutcome {
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
        left: false,
    }
}
