//! `metrics`: custom counters beside the built-in ones.
//! `incr(name [, n])` returns the new value, `get(name)`, `snapshot()` the whole report.

use std::collections::BTreeMap;
use std::sync::Arc;

use mlua::{Lua, LuaSerdeExt, Table};

use super::AgentContext;

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let c = ctx.clone();
    t.set(
        "incr",
        lua.create_function(move |_, (name, n): (String, Option<i64>)| {
            let max = c.coord.config.quotas.max_metrics;
            c.coord
                .metrics
                .incr(&name, n.unwrap_or(1), max)
                .map_err(super::host_err)
        })?,
    )?;
    let c = ctx.clone();
    t.set(
        "get",
        lua.create_function(move |_, name: String| Ok(c.coord.metrics.custom(&name)))?,
    )?;
    let c = ctx.clone();
    t.set(
        "snapshot",
        lua.create_function(move |lua, ()| {
            lua.to_value(&c.coord.metrics.snapshot(&BTreeMap::new(), None))
        })?,
    )?;
    Ok(t)
}
