//! `agent`: who this agent is, `finish()` to end it, and `checkpoint(value)`
//! to keep its own progress for `on_resume` after `orrery resume`.

use std::sync::Arc;

use mlua::{Lua, Table};

use super::AgentContext;

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("id", ctx.id.as_str())?;
    t.set("role", ctx.role.as_str())?;
    t.set("task_id", ctx.coord.task.id.as_str())?;
    let c = ctx.clone();
    t.set(
        "finish",
        lua.create_function(move |_, ()| {
            c.local.lock().finished = true;
            Ok(())
        })?,
    )?;
    let c = ctx.clone();
    t.set(
        "checkpoint",
        lua.create_async_function(move |lua, value: mlua::Value| {
            let c = c.clone();
            async move {
                let json = super::convert::to_json(&lua, value, || "agent.checkpoint".to_string())?;
                let text = json.to_string();
                super::settle_writes(&c).await.map_err(super::host_err)?;
                c.coord
                    .store
                    .checkpoint_put(&c.coord.task.id, &c.id, &text)
                    .await
                    .map_err(|e| super::host_err(e.into()))?;
                Ok(())
            }
        })?,
    )?;
    Ok(t)
}
