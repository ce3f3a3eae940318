//! The `test` table of a spec's VM: the fixtures the host gives a test.
//!
//! - `test.setup{task = ..., llm = ..., settings = ...}`: a fresh world for the current
//!   test (the host tables are bound to it again);
//! - `test.run([setup])`: the task run from start to end; returns the report
//!   (`status`, `outputs`, `errors`, `metrics`, ...) and `blackboard`;
//! - `test.start()`: starts the roles the task starts up front (its
//!   `agents`, or every role no spawn condition starts), as `orrery run`
//!   would, and returns their ids;
//! - `test.advance(ms)`: moves the test clock, running whatever falls due,
//!   and lets the agents finish reacting to it;
//! - `test.llm_calls()`: the LLM requests of the test so far;
//! - `test.host_calls([name])`: the calls of the host functions the setup
//!   spies on (`spies = {"spawn.signal"}`) made by the world's agents;
//! - `test.role(name)`: a fresh copy of a role's module table, loaded in the
//!   spec's own VM (to call its functions directly).

use std::sync::Arc;

use mlua::{Lua, Table, Value};
use parking_lot::Mutex;

use crate::lua_api::{self, to_lua};

use super::host_err;

use super::answers::ScriptedLlm;
use super::setup::{default_setup, read_setup};
use super::world::{Base, HostCalls, Setup, World, run_to_end};

/// What the fixtures of one spec file share with its runner.
pub struct FileState {
    /// Settings and scripts.
    pub base: Arc<Base>,
    /// The current test's world.
    pub world: Mutex<Option<World>>,
    /// The setup of the current world.
    pub setup: Mutex<Setup>,
    /// Every LLM script of the current test (checked for unscripted calls at its end).
    pub scripts: Mutex<Vec<Arc<ScriptedLlm>>>,
    /// Every host-call record of the current test.
    pub host_calls: Mutex<Vec<Arc<HostCalls>>>,
}

impl FileState {
    /// The state of a spec file's run, with the default setup.
    pub fn new(base: Arc<Base>) -> crate::Result<FileState> {
        Ok(FileState {
            base,
            world: Mutex::new(None),
            setup: Mutex::new(default_setup()?),
            scripts: Mutex::new(Vec::new()),
            host_calls: Mutex::new(Vec::new()),
        })
    }

    /// Replaces the current world by a fresh one of `setup` and binds the
    /// host tables of `lua` to it; the old world is ended.
    pub async fn rebuild(&self, lua: &Lua, setup: Setup) -> crate::Result<()> {
        setup.spy_on_agents();
        self.host_calls.lock().push(setup.host_calls.clone());
        let world = World::held(&self.base, &setup).await?;
        lua_api::register_all(lua, &world.spec)
            .map_err(|e| crate::Error::Coordination(format!("binding the host API: {e}")))?;
        self.scripts.lock().push(setup.llm.clone());
        *self.setup.lock() = setup;
        let old = self.world.lock().replace(world);
        if let Some(old) = old {
            let _ = old.finish().await;
        }
        Ok(())
    }

    /// Ends the current world; returns what its agents failed with, one
    /// line each (`beta-1: scripts/beta.lua:12: ...`), and whether the spec
    /// saw each failure coming (it waited for that agent with `spawn.wait`).
    pub async fn end_world(&self) -> Vec<(String, bool)> {
        let old = self.world.lock().take();
        let Some(old) = old else { return Vec::new() };
        let waited = std::mem::take(&mut old.spec.local.lock().waited);
        match old.finish().await {
            Ok(report) => report
                .errors
                .iter()
                .filter(|e| e.fatal)
                .map(|e| {
                    let line = format!(
                        "{}: {}",
                        e.agent,
                        e.message.lines().next().unwrap_or_default()
                    );
                    (line, waited.contains(&e.agent))
                })
                .collect(),
            Err(e) => vec![(e.to_string(), false)],
        }
    }
}

/// Turns of the other tasks `test.advance` waits after the clock moved.
const SETTLE_TURNS: usize = 256;

/// Lets whatever fell due at this instant run, and what that wakes, before
/// the spec goes on: the spec's own timer may fire before an agent's due at
/// the same instant. Each yield lets every runnable task take a turn, and the
/// timer driver is polled between turns, so a chain of wake-ups (a timer
/// round sends a message, its handler writes) finishes within a few turns.
async fn settle() {
    for _ in 0..SETTLE_TURNS {
        tokio::task::yield_now().await;
    }
}

/// Registers the global `test` table in `lua`.
pub fn register(lua: &Lua, state: Arc<FileState>) -> mlua::Result<()> {
    let t = lua.create_table()?;
    let s = state.clone();
    t.set(
        "setup",
        lua.create_async_function(move |lua, opts: Option<Table>| {
            let s = s.clone();
            async move {
                let setup = read_setup(&lua, opts)?;
                s.rebuild(&lua, setup).await.map_err(host_err)
            }
        })?,
    )?;
    let s = state.clone();
    t.set(
        "run",
        lua.create_async_function(move |lua, opts: Option<Table>| {
            let s = s.clone();
            async move {
                let setup = match opts {
                    Some(opts) => {
                        let setup = read_setup(&lua, Some(opts))?;
                        s.scripts.lock().push(setup.llm.clone());
                        s.host_calls.lock().push(setup.host_calls.clone());
                        setup
                    }
                    None => s.setup.lock().clone(),
                };
                setup.spy_on_agents();
                let finished = run_to_end(&s.base, &setup).await;
                s.setup.lock().spy_on_agents();
                let finished = finished.map_err(host_err)?;
                let mut report = serde_json::to_value(&finished.report)
                    .map_err(|e| mlua::Error::runtime(format!("test.run: {e}")))?;
                report["blackboard"] = serde_json::to_value(&finished.blackboard)
                    .map_err(|e| mlua::Error::runtime(format!("test.run: {e}")))?;
                to_lua(&lua, &report)
            }
        })?,
    )?;
    t.set(
        "advance",
        lua.create_async_function(|_, ms: f64| async move {
            tokio::time::sleep(lua_api::millis(ms)).await;
            settle().await;
            Ok(())
        })?,
    )?;
    let s = state.clone();
    t.set(
        "start",
        lua.create_async_function(move |lua, ()| {
            let s = s.clone();
            async move {
                let coord = s.world.lock().as_ref().map(|w| w.coord.clone());
                let coord = coord.ok_or_else(|| mlua::Error::runtime("test.start: no world"))?;
                let task = &coord.task;
                // The roles `orrery run` starts up front.
                let roles = task.agents.clone().unwrap_or_else(|| {
                    s.base
                        .registry
                        .roles()
                        .into_iter()
                        .filter(|r| !task.spawn.iter().any(|c| &c.agent == r))
                        .collect()
                });
                let mut ids = Vec::new();
                for role in roles {
                    let id = coord
                        .spawner
                        .spawn(&role, Some(super::world::SPEC_AGENT))
                        .await
                        .map_err(host_err)?;
                    ids.push(serde_json::Value::String(id));
                }
                to_lua(&lua, &serde_json::Value::Array(ids))
            }
        })?,
    )?;
    let s = state.clone();
    t.set(
        "llm_calls",
        lua.create_function(move |lua, ()| {
            let calls: Vec<serde_json::Value> = s
                .scripts
                .lock()
                .iter()
                .flat_map(|l| l.calls())
                .map(|req| {
                    serde_json::json!({
                        "prompt": req.last_user_text(),
                        "messages": req.messages,
                        "json": req.json,
                        "model": req.model,
                    })
                })
                .collect();
            to_lua(lua, &serde_json::Value::Array(calls))
        })?,
    )?;
    let s = state.clone();
    t.set(
        "host_calls",
        lua.create_function(move |lua, name: Option<String>| {
            let calls: Vec<serde_json::Value> = s
                .host_calls
                .lock()
                .iter()
                .flat_map(|h| h.calls.lock().clone())
                .filter(|(_, n, _)| name.as_ref().is_none_or(|want| want == n))
                .map(|(agent, name, args)| {
                    serde_json::json!({ "agent": agent, "name": name, "args": args })
                })
                .collect();
            to_lua(lua, &serde_json::Value::Array(calls))
        })?,
    )?;
    let s = state.clone();
    t.set(
        "role",
        lua.create_function(move |lua, name: String| {
            let script = s.base.registry.role(&name).map_err(host_err)?;
            let chunk = crate::agent::sandbox::compile(lua, &script)?;
            // A role's top level, as when an agent loads it.
            crate::lua_api::top_level::running(lua, || chunk.call::<Value>(name.as_str()))
        })?,
    )?;
    lua.globals().set("test", t)
}
