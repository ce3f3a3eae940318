//! `spawn`: `when{trigger, threshold, agent [, repeat]}` registers a condition,
//! `signal(trigger, value)` reports a value (returns the ids it started),
//! `agent(role)` starts an agent now (returns its id).

use std::sync::Arc;

use mlua::{Lua, LuaSerdeExt, Table};

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
                    .await
                    .map_err(host_err)
            }
        })?,
    )?;
    Ok(t)
}
