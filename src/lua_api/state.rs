//! `state`: agent phases. `set(phase [, reason])` moves this agent;
//! `get([id])`, `history([id])` and `agents([role])` read any agent of the task.

use std::sync::Arc;

use mlua::{Lua, Table};

use super::AgentContext;
use super::module::{IntoLuaErr, Module};
use crate::coordination::AgentPhase;
use crate::error::Error;
use crate::store::AgentRecord;

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let m = Module::new(lua, ctx)?;
    m.store("set", set)?;
    m.store("get", get)?;
    m.store("history", history)?;
    m.store("agents", agents)?;
    Ok(m.finish())
}

/// `state.set(phase [, reason])`: moves this agent to `phase`.
async fn set(
    _: Lua,
    c: Arc<AgentContext>,
    (phase, reason): (String, Option<String>),
) -> mlua::Result<()> {
    // Shown in the host's phase lines: one line, bounded.
    let reason = reason.map(|r| super::log::one_line(&r));
    let phase: AgentPhase = phase.parse().into_lua_err()?;
    {
        let mut local = c.local.lock();
        if let Some(reached) = local.replay_until {
            if !phase.is_terminal() && phase <= reached {
                return Ok(());
            }
            local.replay_until = None;
        }
    }
    c.coord
        .states
        .transition(&c.id, phase, reason)
        .await
        .into_lua_err()
}

/// `state.get([id])`: the phase of agent `id` (this agent by default).
async fn get(_: Lua, c: Arc<AgentContext>, id: Option<String>) -> mlua::Result<Option<String>> {
    let id = id.unwrap_or_else(|| c.id.clone());
    let record = c.coord.states.get(&id).await.into_lua_err()?;
    Ok(record.map(|r| r.phase))
}

/// `state.history([id])`: `{phase, at}` of every phase agent `id` went through.
async fn history(lua: Lua, c: Arc<AgentContext>, id: Option<String>) -> mlua::Result<Table> {
    let id = id.unwrap_or_else(|| c.id.clone());
    let record = c.coord.states.get(&id).await.into_lua_err()?;
    let record = record
        .ok_or_else(|| Error::bad_input(format!("state.history('{id}')"), "no such agent"))
        .into_lua_err()?;
    let out = lua.create_table()?;
    for entry in record.history {
        let e = lua.create_table()?;
        e.set("phase", entry.phase)?;
        e.set("at", entry.at_ms)?;
        out.push(e)?;
    }
    Ok(out)
}

/// `state.agents([role])`: `{id, role, phase, host, error}` of every agent
/// of the task (of `role` only, when given).
async fn agents(lua: Lua, c: Arc<AgentContext>, role: Option<String>) -> mlua::Result<Table> {
    let out = lua.create_table()?;
    let records = c.coord.states.list().await.into_lua_err()?;
    let of_role = |r: &&AgentRecord| role.as_deref().is_none_or(|wanted| r.role == wanted);
    for r in records.iter().filter(of_role).cloned() {
        let e = lua.create_table()?;
        e.set("id", r.id)?;
        e.set("role", r.role)?;
        e.set("phase", r.phase)?;
        e.set("host", r.host)?;
        e.set("error", r.error)?;
        out.push(e)?;
    }
    Ok(out)
}
