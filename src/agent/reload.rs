//! Hot reload inside one agent.
//!
//! At each callback boundary (before `start`, before each event is
//! dispatched — so an idle agent woken by a message checks first — and before
//! `stop`) the agent compares the registry's version with the one it last saw.
//! When it moved, the agent picks up the new code of its role and of the
//! modules its VM required:
//!
//! - a changed module, and every module that captured it while loading, is
//!   dropped from `package.loaded`;
//! - the role chunk runs again when the role script changed or captured one of
//!   those modules, and its table replaces the old one; the state table
//!   (`self`) stays;
//! - when the new code defines `on_reload(self, old_module)`, the subscriptions
//!   and watches the old code registered are dropped (they are closures of the
//!   old code) and the hook runs: it migrates `self` in place, or returns a
//!   table that becomes the new state, and registers what the new code needs.
//!
//! A failure on the way (the chunk raises or returns no table, the hook raises)
//! puts everything back: the agent keeps running the code it had. It is logged
//! with `path:line` and counted in `host.reload_errors`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use mlua::{Table, Value};

use super::modules::{self, ModuleGraph};
use super::{Agent, errors, load_module};
use crate::coordination::journal::Event;
use crate::error::{Error, Result};
use crate::lua_api::{self, HANDLERS, WATCHES};
use crate::scripts::Script;

/// The `tracing` target of every hot-reload log line.
pub const LOG_TARGET: &str = "orrery::reload";

/// What a switch replaced, to put back when it fails.
struct Undo {
    module: Table,
    script: Arc<Script>,
    state: Table,
    graph: Option<ModuleGraph>,
    /// `package.loaded` entries dropped for reloading.
    loaded: Vec<(String, Value)>,
    handlers: Table,
    watches: Table,
}

impl Agent {
    /// Switches to the registry's newer code of this role and of the modules
    /// this VM required, if there is any. Never fails: a failed switch leaves
    /// the running code in place and is logged and counted.
    pub(super) async fn maybe_reload(&mut self) {
        let registry = self.ctx.registry.clone();
        let version = registry.version();
        if version == self.seen_version {
            return;
        }
        self.seen_version = version;
        // An agent whose role file was deleted keeps its own copy of the
        // script, and still picks up changed modules with it.
        let latest = registry
            .role(&self.ctx.role)
            .unwrap_or_else(|_| self.script.clone());
        let role_changed = latest.version != self.script.version;
        let (stale, dropped, role_captured) = modules::with_graph(&self.lua, |g| {
            let stale = g.stale(&registry);
            let dropped = g.with_dependants(&stale);
            let captured = g.role_requires_any(&dropped);
            (stale, dropped, captured)
        })
        .unwrap_or_default();
        if !role_changed && stale.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut changed: Vec<String> = stale
            .iter()
            .filter_map(|m| registry.module(m))
            .map(|s| s.path.display().to_string())
            .collect();
        if role_changed {
            changed.insert(0, latest.path.display().to_string());
        }
        let changed = changed.join(", ");
        let id = self.ctx.id.clone();
        match self
            .switch(latest, &dropped, role_changed || role_captured)
            .await
        {
            Ok(()) => tracing::info!(
                target: LOG_TARGET,
                agent = %id,
                "{id} switched to the new code of {changed} in {:.2} ms",
                started.elapsed().as_secs_f64() * 1e3
            ),
            Err(e) => {
                self.ctx
                    .coord
                    .metrics
                    .host
                    .reload_errors
                    .fetch_add(1, Ordering::Relaxed);
                self.ctx.coord.journal.record(|| Event::ReloadRefused {
                    path: changed.clone(),
                    error: e.to_string(),
                });
                tracing::error!(
                    target: LOG_TARGET,
                    agent = %id,
                    "{e}\n{id} keeps running its previous code (new code of {changed} not taken)"
                );
            }
        }
        self.publish_modules();
    }

    /// Reports the modules this VM loaded to the registry's users, when that changed.
    pub(super) fn publish_modules(&mut self) {
        let Some((generation, names)) =
            modules::with_graph(&self.lua, |g| (g.generation(), g.modules()))
        else {
            return;
        };
        if generation != self.published_modules {
            self.published_modules = generation;
            self.ctx.registry.users().loaded(&self.ctx.id, names);
        }
    }

    /// Drops `dropped` from `package.loaded`, runs `script` again when
    /// `rerun_role`, and puts everything back on failure.
    async fn switch(
        &mut self,
        script: Arc<Script>,
        dropped: &BTreeSet<String>,
        rerun_role: bool,
    ) -> Result<()> {
        let undo = self
            .undo_point(dropped, rerun_role)
            .map_err(|e| errors::from_lua(&e))?;
        let result = if rerun_role {
            self.take_new_code(script).await
        } else {
            // Only modules required lazily (inside callbacks) changed: the next
            // `require` loads their new code.
            Ok(())
        };
        if result.is_err() {
            self.undo(undo);
        }
        result
    }

    fn undo_point(&mut self, dropped: &BTreeSet<String>, rerun_role: bool) -> mlua::Result<Undo> {
        let loaded_table: Table = self.lua.named_registry_value("_LOADED")?;
        let mut loaded = Vec::with_capacity(dropped.len());
        for name in dropped {
            loaded.push((name.clone(), loaded_table.get::<Value>(name.as_str())?));
            loaded_table.set(name.as_str(), Value::Nil)?;
        }
        let graph = modules::with_graph(&self.lua, |g| {
            let before = g.clone();
            g.forget(dropped, rerun_role);
            before
        });
        Ok(Undo {
            module: self.module.clone(),
            script: self.script.clone(),
            state: self.state.clone(),
            graph,
            loaded,
            handlers: self.lua.named_registry_value(HANDLERS)?,
            watches: self.lua.named_registry_value(WATCHES)?,
        })
    }

    fn undo(&mut self, undo: Undo) {
        if let Err(e) = self.set_module(undo.module) {
            tracing::error!(target: LOG_TARGET, agent = %self.ctx.id, "could not restore the previous module: {e}");
        }
        self.script = undo.script;
        self.state = undo.state;
        if let Some(graph) = undo.graph {
            modules::with_graph(&self.lua, |g| *g = graph);
        }
        let restored = (|| -> mlua::Result<()> {
            let loaded: Table = self.lua.named_registry_value("_LOADED")?;
            for (name, value) in undo.loaded {
                loaded.set(name, value)?;
            }
            self.lua.set_named_registry_value(HANDLERS, undo.handlers)?;
            self.lua.set_named_registry_value(WATCHES, undo.watches)
        })();
        if let Err(e) = restored {
            tracing::error!(target: LOG_TARGET, agent = %self.ctx.id, "could not restore the previous code: {e}");
        }
    }

    /// Runs the new role chunk, takes its table, and lets its `on_reload` migrate the state.
    async fn take_new_code(&mut self, script: Arc<Script>) -> Result<()> {
        let module = self
            .budget
            .metered_sync("load", || load_module(&self.lua, &script))?;
        let old = self.set_module(module)?;
        self.script = script;
        let Some(hook) = self.callback("on_reload")? else {
            return Ok(());
        };
        let fresh = |name: &str| -> mlua::Result<()> {
            self.lua
                .set_named_registry_value(name, self.lua.create_table()?)
        };
        fresh(HANDLERS).map_err(|e| errors::from_lua(&e))?;
        fresh(WATCHES).map_err(|e| errors::from_lua(&e))?;
        let result = self
            .run_callback(
                "on_reload",
                hook.call_async::<Value>((self.state.clone(), old)),
            )
            .await
            .map_err(super::CallbackFailure::into_error);
        lua_api::settle_held(&self.ctx, result.as_ref().err()).await?;
        match result? {
            Value::Table(state) => self.state = state,
            Value::Nil => {}
            other => {
                return Err(Error::Script {
                    message: format!(
                        "{}: on_reload must return nil or the new state table, got {}",
                        self.script.path.display(),
                        other.type_name()
                    ),
                });
            }
        }
        Ok(())
    }
}
