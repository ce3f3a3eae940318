//! `agent`: who this agent is, and `finish()` to end it.

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
    Ok(t)
}
