//! `spawn`: `when{trigger, threshold, agent [, repeat]}` registers a condition
//! (once: an identical registration keeps the one there and returns false),
//! `signal(trigger, value)` reports a value (returns the ids it started),
//! `agent(role)` starts an agent now (returns its id), `wait(id or ids [,
//! timeout_ms])` waits until agents have ended (returns their final phases).

use std::sync::Arc;
use tracing::Instrument;

use mlua::{Lua, Table, Value as LuaValue};

use super::module::{IntoLuaErr, Module};
use super::options::{FromOptions, OptionError, Options, decode};
use super::{AgentContext, arg_err};
use crate::task::SpawnCondition;

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let m = Module::new(lua, ctx)?;
    m.sync("when", when)?;
    m.wait("signal", signal)?;
    m.wait("agent", agent)?;
    m.wait("wait", wait)?;
    Ok(m.finish())
}

/// `spawn.when{trigger, threshold, agent [, repeat]}`: registers a spawn
/// condition, as a task file's `[[spawn]]` table does; true when it added
/// one, false when an identical condition was there already (it is kept).
fn when(_: &Lua, c: &AgentContext, spec: Table) -> mlua::Result<bool> {
    let condition: SpawnCondition = decode("spawn.when", Some(spec))?;
    c.registry.role(&condition.agent).into_lua_err()?;
    c.coord.spawner.register(condition).into_lua_err()
}

/// The table of `spawn.when`.
impl FromOptions for SpawnCondition {
    const NAMES: &'static [&'static str] = &["trigger", "threshold", "agent", "repeat"];

    fn from_options(o: &Options) -> Result<Self, OptionError> {
        let required = |name: &str| {
            o.string(name)?
                .ok_or_else(|| o.expected("string", name, &LuaValue::Nil))
        };
        let trigger = required("trigger")?;
        let threshold = match o.value("threshold")? {
            LuaValue::Integer(n) => n as f64,
            LuaValue::Number(n) => n,
            other => return Err(o.expected("number", "threshold", &other)),
        };
        if trigger.is_empty() || !threshold.is_finite() {
            return Err(o.error("trigger must be a non-empty string and threshold a finite number"));
        }
        Ok(SpawnCondition {
            trigger,
            threshold,
            agent: required("agent")?,
            repeat: o.boolean("repeat")?.unwrap_or(false),
        })
    }
}

/// `spawn.signal(trigger, value)`: the ids of the agents it started.
async fn signal(
    _: Lua,
    c: Arc<AgentContext>,
    (trigger, value): (String, f64),
) -> mlua::Result<Vec<String>> {
    c.coord
        .spawner
        .signal(&c.id, &trigger, value)
        .instrument(crate::trace::host_call("spawn.signal"))
        .await
        .into_lua_err()
}

/// `spawn.agent(role)`: the id of the agent it started.
async fn agent(_: Lua, c: Arc<AgentContext>, role: String) -> mlua::Result<String> {
    crate::coordination::quotas::check_name("role", &role).into_lua_err()?;
    c.coord
        .spawner
        .spawn(&role, Some(&c.id))
        .instrument(crate::trace::host_call("spawn.agent"))
        .await
        .into_lua_err()
}

/// `spawn.wait(id or ids [, timeout_ms])`: the final phase of each agent
/// (one phase for one id), once all have ended.
async fn wait(
    lua: Lua,
    c: Arc<AgentContext>,
    (ids, timeout): (LuaValue, Option<f64>),
) -> mlua::Result<LuaValue> {
    let single = matches!(ids, LuaValue::String(_));
    let ids = agent_ids(&ids)?;
    let wait = timeout.map(super::millis);
    let mut phases = Vec::with_capacity(ids.len());
    for id in &ids {
        let ended = c.coord.states.wait_ended(id, wait).await.into_lua_err()?;
        let Some(record) = ended else {
            let now = c.coord.states.get(id).await.ok().flatten();
            return Err(arg_err(
                "spawn.wait",
                format!(
                    "agent {id} did not end within {} ms (it is {})",
                    wait.unwrap_or_default().as_millis(),
                    now.map_or("gone".into(), |r| r.phase)
                ),
            ));
        };
        phases.push(record.phase);
    }
    if crate::coordination::clock::is_test_clock() {
        c.local.lock().waited.extend(ids);
    }
    if single {
        return Ok(LuaValue::String(lua.create_string(&phases[0])?));
    }
    Ok(LuaValue::Table(lua.create_sequence_from(phases)?))
}

/// The agent ids `spawn.wait` was given: one id, or a list of them.
fn agent_ids(ids: &LuaValue) -> mlua::Result<Vec<String>> {
    let bad = |what: &str| {
        arg_err(
            "spawn.wait",
            format!(
                "argument #1 must be an agent id or a list of ids (from spawn.agent), got {what}"
            ),
        )
    };
    match ids {
        LuaValue::String(id) => Ok(vec![id.to_str()?.to_string()]),
        LuaValue::Table(t) => t
            .sequence_values::<LuaValue>()
            .map(|v| match v? {
                LuaValue::String(id) => Ok(id.to_str()?.to_string()),
                other => Err(bad(&format!("a list holding a {}", other.type_name()))),
            })
            .collect(),
        other => Err(bad(other.type_name())),
    }
}
