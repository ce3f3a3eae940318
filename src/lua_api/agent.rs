//! `agent`: who this agent is, `finish()` to end it, and `checkpoint(value)`
//! to keep its own progress for `on_resume` after `orrery resume`.

use std::sync::Arc;

use mlua::{Lua, Table, Value};

use super::AgentContext;
use super::module::{IntoLuaErr, Module};

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let m = Module::new(lua, ctx)?;
    m.set("id", ctx.id.as_str())?;
    m.set("role", ctx.role.as_str())?;
    m.set("task_id", ctx.coord.task.id.as_str())?;
    m.sync("finish", finish)?;
    m.store("checkpoint", checkpoint)?;
    Ok(m.finish())
}

/// `agent.finish()`: the agent ends once the current callback returns.
fn finish(_: &Lua, c: &AgentContext, (): ()) -> mlua::Result<()> {
    c.local.lock().finished = true;
    Ok(())
}

/// `agent.checkpoint(value)`: keeps `value` as this agent's checkpoint, after
/// its pending writes (the store call settles them first).
async fn checkpoint(lua: Lua, c: Arc<AgentContext>, value: Value) -> mlua::Result<()> {
    let json = super::convert::to_json(&lua, value, || "agent.checkpoint".to_string())?;
    c.coord
        .store
        .checkpoint_put(&c.coord.task.id, &c.id, &json.to_string())
        .await
        .into_lua_err()
}
