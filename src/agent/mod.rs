//! One agent: a Lua VM of its own, driven on its own tokio task.
//!
//! A role script returns a module table. The host calls `start(self)` once,
//! then, while the agent has message handlers or watches, delivers each event
//! to them (`on_message(self, msg)`, `bus.subscribe` handlers, `blackboard.watch`
//! callbacks) one at a time. Between two callbacks it picks up new code of the
//! role (hot reload). The agent ends when `agent.finish()` was called, when it
//! has nothing left to handle, or when the task stops.

pub mod errors;
mod events;
pub mod sandbox;

use std::sync::Arc;

use mlua::{Function, Lua, Table, Value};
use tokio::sync::watch;

use crate::coordination::AgentPhase;
use crate::error::{Error, Result};
use crate::lua_api::{self, AgentContext};
use crate::scripts::Script;

/// How an agent ended.
#[derive(Debug)]
pub struct AgentOutcome {
    /// Agent id.
    pub id: String,
    /// Its role.
    pub role: String,
    /// The error that ended it, if one did.
    pub fatal: Option<Error>,
    /// Errors of message handlers and watches (each message was given back).
    pub handler_errors: Vec<String>,
}

/// A live agent's VM and code.
pub struct Agent {
    ctx: Arc<AgentContext>,
    lua: Lua,
    module: Table,
    /// The agent's own state, passed as `self` to every callback; kept across reloads.
    state: Table,
    script: Arc<Script>,
    stop: watch::Receiver<bool>,
    /// Quiescence probes of the orchestrator (see `coordination::Activity`).
    probe: watch::Receiver<u64>,
    handler_errors: Vec<String>,
}

impl Agent {
    /// Builds the VM and loads the role's code. Fails with a Script error naming
    /// the file and line when the script does not compile, raises while loading,
    /// or does not return a table.
    pub fn load(ctx: Arc<AgentContext>, stop: watch::Receiver<bool>) -> Result<Agent> {
        let script = ctx.registry.role(&ctx.role)?;
        let lua = sandbox::new_vm(ctx.registry.clone(), ctx.coord.config.memory_limit)
            .map_err(|e| errors::from_lua(&e))?;
        // The API is host code with a bounded footprint: registered with the
        // heap limit lifted, mlua skips the protected call it otherwise wraps
        // around every allocation, which takes a good part off each spawn.
        let limit = lua.set_memory_limit(0).map_err(|e| errors::from_lua(&e))?;
        lua_api::register_all(&lua, &ctx).map_err(|e| errors::from_lua(&e))?;
        lua.set_memory_limit(limit)
            .map_err(|e| errors::from_lua(&e))?;
        let module = load_module(&lua, &script)?;
        let state = lua.create_table().map_err(|e| errors::from_lua(&e))?;
        let probe = ctx.coord.activity.probe_receiver();
        Ok(Agent {
            ctx,
            lua,
            module,
            state,
            script,
            stop,
            probe,
            handler_errors: Vec::new(),
        })
    }

    /// Runs the agent to its end and reports how it went. Phase changes
    /// (READY, then COMPLETE or FAILED) are recorded on the way.
    pub async fn run(mut self) -> AgentOutcome {
        let mut fatal = self.drive().await.err();
        // Off the bus before the final phase is written, so an agent that sees
        // the phase cannot still send this one a message nobody would read.
        self.ctx.coord.bus.leave(&self.ctx.id);
        let states = &self.ctx.coord.states;
        match states.get(&self.ctx.id).await {
            Ok(Some(record)) => match record.phase.parse::<AgentPhase>() {
                // An agent that moved itself to FAILED failed the task, even without an error.
                Ok(AgentPhase::Failed) if fatal.is_none() => {
                    fatal = Some(Error::AgentFailed {
                        agent: self.ctx.id.clone(),
                        reason: record.error.unwrap_or_else(|| "no reason given".into()),
                    });
                }
                Ok(p) if !p.is_terminal() => {
                    let to = if fatal.is_some() {
                        AgentPhase::Failed
                    } else {
                        AgentPhase::Complete
                    };
                    let reason = fatal.as_ref().map(|e| first_line(&e.to_string()));
                    if let Err(e) = states.transition(&self.ctx.id, to, reason).await {
                        fatal = fatal.or(Some(e));
                    }
                }
                _ => {}
            },
            Ok(None) => {}
            Err(e) => fatal = fatal.or(Some(e)),
        }
        AgentOutcome {
            id: self.ctx.id.clone(),
            role: self.ctx.role.clone(),
            fatal,
            handler_errors: std::mem::take(&mut self.handler_errors),
        }
    }

    async fn drive(&mut self) -> Result<()> {
        let ctx = self.ctx.clone();
        ctx.coord
            .states
            .transition(&ctx.id, AgentPhase::Ready, None)
            .await?;
        if let Some(start) = self.callback("start")? {
            let result = start.call_async::<()>(self.state.clone()).await;
            lua_api::settle_held(&ctx, result.is_ok()).await?;
            result.map_err(|e| errors::from_lua(&e))?;
        }
        if self.wants_events()? {
            self.event_loop().await?;
        }
        if let Some(stop) = self.callback("stop")? {
            stop.call_async::<()>(self.state.clone())
                .await
                .map_err(|e| errors::from_lua(&e))?;
        }
        Ok(())
    }

    /// True while the agent should keep handling events.
    fn wants_events(&self) -> Result<bool> {
        let local = self.ctx.local.lock();
        if local.finished {
            return Ok(false);
        }
        Ok(local.has_handlers || self.callback("on_message")?.is_some())
    }

    /// The module's function `name`, if it defines one.
    fn callback(&self, name: &str) -> Result<Option<Function>> {
        match self.module.get::<Value>(name) {
            Ok(Value::Function(f)) => Ok(Some(f)),
            Ok(Value::Nil) => Ok(None),
            Ok(other) => Err(Error::Script {
                message: format!(
                    "{}: field '{name}' of the returned table must be a function, got {}",
                    self.script.path.display(),
                    other.type_name()
                ),
            }),
            Err(e) => Err(errors::from_lua(&e)),
        }
    }

    /// Switches to the registry's newer code of this role, if there is any.
    /// A script that fails to load leaves the running code in place.
    fn maybe_reload(&mut self) {
        let Ok(latest) = self.ctx.registry.role(&self.ctx.role) else {
            return; // deleted: keep running the code we have
        };
        if latest.version == self.script.version {
            return;
        }
        match load_module(&self.lua, &latest) {
            Ok(module) => {
                let old = std::mem::replace(&mut self.module, module);
                self.script = latest;
                if let Ok(Some(hook)) = self.callback("on_reload")
                    && let Err(e) = hook.call::<()>((self.state.clone(), old))
                {
                    tracing::error!(agent = %self.ctx.id, "on_reload failed: {}", errors::describe(&e));
                }
                tracing::info!(agent = %self.ctx.id, file = %self.script.path.display(), "agent switched to new code");
            }
            Err(e) => {
                // Keep the old code; the reloader reports the error once for all agents.
                self.script = Arc::new(Script {
                    version: latest.version,
                    ..(*self.script).clone()
                });
                tracing::debug!(agent = %self.ctx.id, "new code not loaded: {e}");
            }
        }
    }
}

/// Runs a role script and checks that it returns a table.
pub fn load_module(lua: &Lua, script: &Script) -> Result<Table> {
    let value: Value = lua_api::chunks::compile(lua, &script.chunk_name(), &script.source)
        .and_then(|f| f.call(()))
        .map_err(|e| errors::from_lua(&e))?;
    match value {
        Value::Table(t) => Ok(t),
        other => Err(Error::Script {
            message: format!(
                "{}: a role script must return a table of callbacks (start, on_message, ...), got {}",
                script.path.display(),
                other.type_name()
            ),
        }),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}
