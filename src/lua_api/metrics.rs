//! `metrics`: custom counters beside the built-in ones.
//! `incr(name [, n])` returns the new value, `get(name)`, `snapshot()` the whole report.

use std::collections::BTreeMap;
use std::sync::Arc;

use mlua::{Lua, LuaSerdeExt, Table, Value};

use super::AgentContext;
use super::module::{IntoLuaErr, Module};

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let m = Module::new(lua, ctx)?;
    m.sync("incr", incr)?;
    m.sync("get", get)?;
    m.sync("snapshot", snapshot)?;
    Ok(m.finish())
}

/// `metrics.incr(name [, n])`: the counter's new value.
fn incr(_: &Lua, c: &AgentContext, (name, n): (String, Option<i64>)) -> mlua::Result<i64> {
    let max = c.coord.config.quotas.max_metrics;
    c.coord
        .metrics
        .incr(&name, n.unwrap_or(1), max)
        .into_lua_err()
}

/// `metrics.get(name)`: the counter's value.
fn get(_: &Lua, c: &AgentContext, name: String) -> mlua::Result<i64> {
    Ok(c.coord.metrics.custom(&name))
}

/// `metrics.snapshot()`: the task's whole metrics report.
fn snapshot(lua: &Lua, c: &AgentContext, (): ()) -> mlua::Result<Value> {
    lua.to_value(&c.coord.metrics.snapshot(&BTreeMap::new(), None))
}
