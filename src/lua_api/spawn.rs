//! `spawn`: `when{trigger, threshold, agent [, repeat]}` registers a condition,
//! `signal(trigger, value)` reports a value (returns the ids it started),
//! `agent(role)` starts an agent now (returns its id), `wait(id or ids [,
//! timeout_ms])` waits until agents have ended (returns their final phases).

use std::sync::Arc;
use tracing::Instrument;

use mlua::{Lua, LuaSerdeExt, Table, Value as LuaValue};

use super::{AgentContext, arg_err, host_err};
use crate::task::SpawnCondition;

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let t = lua.create_table()?;

    let c = ctx.clone();
    t.set(
        "when",
        lua.create_function(move |lua, spec: Table| {
            let condition: SpawnCondition =
                lua.from_value(mlua::Value::Table(spec)).map_err(|e| {
                    arg_err(
                        "spawn.when",
                        format!("expected {{trigger, threshold, agent [, repeat]}}: {e}"),
                    )
                })?;
            if condition.trigger.is_empty() || !condition.threshold.is_finite() {
                return Err(arg_err(
                    "spawn.when",
                    "trigger must be a non-empty string and threshold a finite number",
                ));
            }
            c.registry.role(&condition.agent).map_err(host_err)?;
            c.coord.spawner.register(condition).map_err(host_err)
        })?,
    )?;

    let c = ctx.clone();
    t.set(
        "signal",
        lua.create_async_function(move |_, (trigger, value): (String, f64)| {
            let c = c.clone();
            async move {
                c.coord
                    .spawner
                    .signal(&c.id, &trigger, value)
                    .instrument(crate::trace::host_call("spawn.signal"))
                    .await
                    .map_err(host_err)
            }
        })?,
    )?;

    let c = ctx.clone();
    t.set(
        "agent",
        lua.create_async_function(move |_, role: String| {
            let c = c.clone();
            async move {
                crate::coordination::quotas::check_name("role", &role).map_err(host_err)?;
                c.coord
                    .spawner
                    .spawn(&role, Some(&c.id))
                    .instrument(crate::trace::host_call("spawn.agent"))
                    .await
                    .map_err(host_err)
            }
        })?,
    )?;

    let c = ctx.clone();
    t.set(
        "wait",
        lua.create_async_function(move |lua, (ids, timeout): (LuaValue, Option<f64>)| {
            let c = c.clone();
            let single = matches!(ids, LuaValue::String(_));
            let ids = agent_ids(&ids);
            async move {
                let ids = ids?;
                let wait = timeout.map(super::millis);
                let mut phases = Vec::with_capacity(ids.len());
                for id in &ids {
                    let ended = c
                        .coord
                        .states
                        .wait_ended(id, wait)
                        .await
                        .map_err(host_err)?;
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
                if single {
                    return Ok(LuaValue::String(lua.create_string(&phases[0])?));
                }
                Ok(LuaValue::Table(lua.create_sequence_from(phases)?))
            }
        })?,
    )?;
    Ok(t)
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
