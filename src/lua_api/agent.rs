//! `agent`: who this agent is, and `finish()` to end it.

use std::sync::Arc;

use mlua::{Lua, Table};

use super::AgentContext;
use super::module::Module;

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let m = Module::new(lua, ctx)?;
    m.set("id", ctx.id.as_str())?;
    m.set("role", ctx.role.as_str())?;
    m.set("task_id", ctx.coord.task.id.as_str())?;
    m.sync("finish", finish)?;
    Ok(m.finish())
}

/// `agent.finish()`: the agent ends once the current callback returns.
fn finish(_: &Lua, c: &AgentContext, (): ()) -> mlua::Result<()> {
    c.local.lock().finished = true;
    Ok(())
}
