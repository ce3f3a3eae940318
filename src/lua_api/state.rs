//! `state`: agent phases. `set(phase [, reason])` moves this agent;
//! `get([id])`, `history([id])` and `agents([role])` read any agent of the task.

use std::sync::Arc;

use mlua::{Lua, Table};

use super::{AgentContext, host_err, store_fn};
use crate::coordination::AgentPhase;
use crate::error::Error;

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let embedded = ctx.embedded();

    let c = ctx.clone();
    t.set(
        "set",
        store_fn(
            lua,
            embedded,
            move |_, (phase, reason): (String, Option<String>)| {
                let c = c.clone();
                // Shown in the host's phase lines: one line, bounded.
                let reason = reason.map(|r| super::log::one_line(&r));
                async move {
                    let phase: AgentPhase = phase.parse().map_err(host_err)?;
                    c.coord
                        .states
                        .transition(&c.id, phase, reason)
                        .await
                        .map_err(host_err)
                }
            },
        )?,
    )?;

    let c = ctx.clone();
    t.set(
        "get",
        store_fn(lua, embedded, move |_, id: Option<String>| {
            let c = c.clone();
            async move {
                let id = id.unwrap_or_else(|| c.id.clone());
                Ok(c.coord
                    .states
                    .get(&id)
                    .await
                    .map_err(host_err)?
                    .map(|r| r.phase))
            }
        })?,
    )?;

    let c = ctx.clone();
    t.set(
        "history",
        store_fn(lua, embedded, move |lua, id: Option<String>| {
            let c = c.clone();
            async move {
                let id = id.unwrap_or_else(|| c.id.clone());
                let record = c
                    .coord
                    .states
                    .get(&id)
                    .await
                    .map_err(host_err)?
                    .ok_or_else(|| {
                        host_err(Error::bad_input(
                            format!("state.history('{id}')"),
                            "no such agent",
                        ))
                    })?;
                let out = lua.create_table()?;
                for entry in record.history {
                    let e = lua.create_table()?;
                    e.set("phase", entry.phase)?;
                    e.set("at", entry.at_ms)?;
                    out.push(e)?;
                }
                Ok(out)
            }
        })?,
    )?;

    let c = ctx.clone();
    t.set(
        "agents",
        store_fn(lua, embedded, move |lua, role: Option<String>| {
            let c = c.clone();
            async move {
                let out = lua.create_table()?;
                let records = c.coord.states.list().await.map_err(host_err)?;
                let of_role = |r: &&crate::store::AgentRecord| {
                    role.as_deref().is_none_or(|wanted| r.role == wanted)
                };
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
        })?,
    )?;
    Ok(t)
}
