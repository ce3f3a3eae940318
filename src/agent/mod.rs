//! One agent: a Lua VM of its own, driven on its own tokio task.
//!
//! A role script returns a module table. The host calls `start(self)` once,
//! then, while the agent has message handlers or watches, delivers each event
//! to them (`on_message(self, msg)`, `bus.subscribe` handlers, `blackboard.watch`
//! callbacks) one at a time. Between two callbacks it picks up new code of the
//! role and of its modules (hot reload, see [`reload`](self::reload)). The
//! agent ends when `agent.finish()` was called, when it has nothing left to
//! handle, or when the task stops.

pub mod budget;
pub mod errors;
mod events;
pub mod modules;
pub mod patterns;
pub mod reload;
mod safe_std;
mod safe_string;
mod safe_table;
pub mod sandbox;

use std::sync::Arc;

use budget::Budget;
use mlua::{Function, Lua, LuaSerdeExt, Table, Value};
use tokio::sync::watch;
use tracing::Instrument;

use crate::coordination::AgentPhase;
use crate::error::{Error, Result};
use crate::lua_api::{self, AgentContext};
use crate::scripts::Script;

/// How long new code may wait for a callback to return before the agent
/// says so (see `Agent::warn_when_new_code_waits`).
pub const NEW_CODE_WAITS: std::time::Duration = std::time::Duration::from_secs(3);

/// The callbacks a role module may define; anything else in it is the script's own.
pub const CALLBACKS: &[&str] = &["start", "on_message", "on_reload", "on_resume", "stop"];

/// What the orchestrator asks of its agents, through the watch each one holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Halt {
    /// Keep handling events.
    #[default]
    Go,
    /// The task ends: finish the callback in progress, run `stop`, end in
    /// COMPLETE (or FAILED).
    Stop,
    /// This process leaves the task to another (a worker's hand-over): finish
    /// the callback in progress, then end without `stop` and without a final
    /// phase, so the agent's record stays as stored and the process that
    /// resumes the task brings it back. An agent that has not run `start`
    /// yet does not run it.
    Leave,
}

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
    pub handler_errors: Vec<HandlerError>,
    /// It left at a callback boundary ([`Halt::Leave`]): its record is as
    /// stored, for the process that resumes the task.
    pub left: bool,
}

/// An error raised by a message handler or a watch; the agent went on.
#[derive(Debug)]
pub struct HandlerError {
    /// What was being handled: `message 'job' from alpha-1`, `watch of 'cfg'`.
    pub during: String,
    /// The error.
    pub error: Error,
    /// The event is lost: a blackboard change is not delivered again (a
    /// message was given back, and its redeliveries decide its fate).
    pub lost: bool,
}

/// A live agent's VM and code.
pub struct Agent {
    ctx: Arc<AgentContext>,
    lua: sandbox::Vm,
    module: Table,
    /// The agent's own state, passed as `self` to every callback; kept across reloads.
    state: Table,
    script: Arc<Script>,
    /// Registry version last checked for new code.
    seen_version: u64,
    /// [`modules::ModuleGraph::generation`] last reported to the registry's users.
    published_modules: u64,
    stop: watch::Receiver<Halt>,
    /// It stopped at a callback boundary for [`Halt::Leave`].
    left: bool,
    /// Quiescence probes of the orchestrator (see `coordination::Activity`).
    probe: watch::Receiver<u64>,
    handler_errors: Vec<HandlerError>,
    /// How often each handler error was seen (by its first line), to log repeats once in a while.
    repeats: std::collections::HashMap<String, u64>,
    budget: Budget,
}

impl Agent {
    /// Builds the VM and loads the role's code. Fails with a Script error naming
    /// the file and line when the script does not compile, raises while loading,
    /// or does not return a table; with AgentTimeout when its top level runs
    /// past `callback_timeout`.
    pub fn load(ctx: Arc<AgentContext>, stop: watch::Receiver<Halt>) -> Result<Agent> {
        // Read before the script: a change registered in between is picked up at the first boundary.
        let seen_version = ctx.registry.version();
        let script = ctx.registry.role(&ctx.role)?;
        let (lua, budget) = sandbox::agent_vm(&ctx).map_err(|e| errors::from_lua(&e))?;
        let state = lua.create_table().map_err(|e| errors::from_lua(&e))?;
        let probe = ctx.coord.activity.probe_receiver();
        let mut agent = Agent {
            ctx,
            lua,
            module: state.clone(),
            state,
            script,
            seen_version,
            published_modules: 0,
            stop,
            left: false,
            probe,
            handler_errors: Vec::new(),
            repeats: std::collections::HashMap::new(),
            budget,
        };
        let loaded = agent
            .budget
            .metered_sync("load", || run_role_chunk(&agent.lua, &agent.script));
        let value = agent
            .judge("load", loaded)
            .map_err(CallbackFailure::into_error)?;
        agent.module = module_of(&agent.script, value)?;
        agent.publish_modules();
        Ok(agent)
    }

    /// Runs one callback future under the budget and turns its result into the
    /// host's error: AgentTimeout when the budget ran out (whatever the script
    /// made of the interruption), a `memory:` Script error when the heap did.
    async fn run_callback<T>(
        &self,
        name: &str,
        fut: impl std::future::Future<Output = mlua::Result<T>>,
    ) -> std::result::Result<T, CallbackFailure> {
        let fut = fut.instrument(crate::trace::callback(&self.ctx.id, name));
        let watched = self.warn_when_new_code_waits(name, fut);
        let result = self.budget.metered(name, watched).await;
        self.judge(name, result)
    }

    /// Runs `fut`, the callback `name`, and says so (once) when new code of
    /// this agent has been waiting for it for [`NEW_CODE_WAITS`]: new code
    /// is taken between callbacks, and a callback that loops (`while true do
    /// ... sleep(200) end` in `start`) never lets it in. Checked each time
    /// the callback resumes, so it costs one atomic load per resume.
    async fn warn_when_new_code_waits<T>(
        &self,
        name: &str,
        fut: impl std::future::Future<Output = T>,
    ) -> T {
        let started = std::time::Instant::now();
        let mut warned = false;
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            let polled = fut.as_mut().poll(cx);
            if polled.is_pending()
                && !warned
                && self.ctx.registry.version() != self.seen_version
                && started.elapsed() >= NEW_CODE_WAITS
                && self.new_code_waits()
            {
                warned = true;
                tracing::warn!(
                    target: reload::LOG_TARGET,
                    agent = %self.ctx.id,
                    "{} has not returned to the host for {:.0} s (callback '{name}'): new code of {} \
                     waits until it does. An agent takes new code between callbacks; do periodic \
                     work with every(ms, fn) or after(ms, fn) instead of a loop",
                    self.ctx.id,
                    started.elapsed().as_secs_f64(),
                    self.script.path.display()
                );
            }
            polled
        })
        .await
    }

    /// True when the registry holds newer code of this agent's role or of a
    /// module its VM required than the agent runs.
    fn new_code_waits(&self) -> bool {
        let registry = &self.ctx.registry;
        let role_changed = registry
            .role(&self.ctx.role)
            .is_ok_and(|latest| latest.version != self.script.version);
        role_changed
            || modules::with_graph(&self.lua, |g| !g.stale(registry).is_empty()).unwrap_or(false)
    }

    /// Classifies the result of the callback `name`.
    fn judge<T>(
        &self,
        name: &str,
        result: mlua::Result<T>,
    ) -> std::result::Result<T, CallbackFailure> {
        if let Some(timeout) = self.budget.exceeded() {
            return Err(CallbackFailure::Fatal(timeout));
        }
        match result {
            Ok(v) => Ok(v),
            Err(e) if errors::is_memory(&e) => Err(CallbackFailure::Fatal(errors::out_of_memory(
                &self.ctx.id,
                name,
                self.ctx.coord.config.memory_limit,
            ))),
            Err(e) => Err(CallbackFailure::Script(e)),
        }
    }

    /// Runs the agent to its end and reports how it went. Phase changes
    /// (READY, then COMPLETE or FAILED) are recorded on the way.
    pub async fn run(mut self) -> AgentOutcome {
        let mut fatal = self.drive().await.err();
        // Off the bus before the final phase is written, so an agent that sees
        // the phase cannot still send this one a message nobody would read.
        self.ctx.coord.bus.leave(&self.ctx.id);
        if self.left && fatal.is_none() {
            // Its record stays as stored: the process that resumes the task
            // brings it back from there.
            return AgentOutcome {
                id: self.ctx.id.clone(),
                role: self.ctx.role.clone(),
                fatal: None,
                handler_errors: std::mem::take(&mut self.handler_errors),
                left: true,
            };
        }
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
            left: false,
        }
    }

    async fn drive(&mut self) -> Result<()> {
        let ctx = self.ctx.clone();
        if *self.stop.borrow() == Halt::Leave {
            // Started while its process leaves: the one that resumes the
            // task runs its `start`.
            self.left = true;
            return Ok(());
        }
        let resumed = ctx.local.lock().resumed.clone();
        let phase = match resumed {
            Some(_) => ctx.coord.states.get(&ctx.id).await?.map(|r| r.phase),
            None => None,
        };
        // A resumed agent keeps its stored phase (from INIT it moves on),
        // and its callback replays the phase changes it had made.
        let reached = phase.as_deref().and_then(|p| p.parse::<AgentPhase>().ok());
        ctx.local.lock().replay_until = reached.filter(|p| !p.is_terminal());
        if phase
            .as_deref()
            .is_none_or(|p| p == AgentPhase::Init.as_str())
        {
            ctx.coord
                .states
                .transition(&ctx.id, AgentPhase::Ready, None)
                .await?;
        }
        self.maybe_reload().await;
        let on_resume = match &resumed {
            Some(_) => self.callback("on_resume")?,
            None => None,
        };
        if let (Some(on_resume), Some(checkpoint)) = (on_resume, resumed) {
            let checkpoint = match checkpoint {
                Some(v) => self.lua.to_value(&v).map_err(|e| Error::Script {
                    message: format!("agent {}: checkpoint: {e}", ctx.id),
                })?,
                None => Value::Nil,
            };
            let result = self
                .run_callback(
                    "on_resume",
                    on_resume.call_async::<()>((self.state.clone(), checkpoint)),
                )
                .await
                .map_err(CallbackFailure::into_error);
            lua_api::settle_held(&ctx, result.as_ref().err()).await?;
            result?;
        } else if let Some(start) = self.callback("start")? {
            let result = self
                .run_callback("start", start.call_async::<()>(self.state.clone()))
                .await
                .map_err(CallbackFailure::into_error);
            lua_api::settle_held(&ctx, result.as_ref().err()).await?;
            result?;
        }
        if self.wants_events()? {
            self.event_loop().await?;
        }
        if self.left {
            return Ok(());
        }
        self.maybe_reload().await;
        if let Some(stop) = self.callback("stop")? {
            let result = self
                .run_callback("stop", stop.call_async::<()>(self.state.clone()))
                .await;
            lua_api::settle_writes(&ctx).await?;
            result.map_err(CallbackFailure::into_error)?;
        }
        Ok(())
    }

    /// True while the agent should keep handling events.
    fn wants_events(&self) -> Result<bool> {
        let local = self.ctx.local.lock();
        if local.finished {
            return Ok(false);
        }
        Ok(
            local.has_handlers
                || !local.timers.is_empty()
                || self.callback("on_message")?.is_some(),
        )
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
}

/// How a callback failed.
pub(crate) enum CallbackFailure {
    /// The agent cannot go on: its budget or its heap ran out.
    Fatal(Error),
    /// The script raised an error.
    Script(mlua::Error),
}

impl CallbackFailure {
    /// The host error to report.
    pub(crate) fn into_error(self) -> Error {
        match self {
            CallbackFailure::Fatal(e) => e,
            CallbackFailure::Script(e) => errors::from_lua(&e),
        }
    }
}

/// Runs a role script and checks that it returns a table whose
/// [`CALLBACKS`] are functions where present. What the chunk requires is
/// recorded in the VM's [`modules::ModuleGraph`] as the role's.
pub fn load_module(lua: &Lua, script: &Script) -> Result<Table> {
    let value = run_role_chunk(lua, script).map_err(|e| match errors::is_memory(&e) {
        true => errors::top_level_out_of_memory(&script.path.display().to_string()),
        false => errors::from_lua(&e),
    })?;
    module_of(script, value)
}

/// Runs a role script's top level (text only), recording what it requires.
fn run_role_chunk(lua: &Lua, script: &Script) -> mlua::Result<Value> {
    modules::loading(lua, modules::Loader::Role, || {
        sandbox::compile(lua, script)?.call(())
    })
}

/// The module table a role script returned, with its [`CALLBACKS`] checked,
/// or a Script error naming the file.
fn module_of(script: &Script, value: Value) -> Result<Table> {
    let Value::Table(module) = value else {
        return Err(Error::Script {
            message: format!(
                "{}: a role script must return a table of callbacks (start, on_message, ...), got {}",
                script.path.display(),
                value.type_name()
            ),
        });
    };
    for name in CALLBACKS {
        let field: Value = module.get(*name).map_err(|e| errors::from_lua(&e))?;
        if !matches!(field, Value::Nil | Value::Function(_)) {
            return Err(Error::Script {
                message: format!(
                    "{}: field '{name}' of the returned table must be a function, got {}",
                    script.path.display(),
                    field.type_name()
                ),
            });
        }
    }
    Ok(module)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}
