//! `task`: the task definition (read-only) and its outputs.
//!
//! Fields `id`, `type`, `description`, `constraints`, `timeout`, `inputs`;
//! `output(name, value)` records an output of the run, `outputs()` reads them all.

use std::sync::Arc;

use mlua::{FromLua, Function, Lua, LuaSerdeExt, Table, Value as LuaValue};

use super::module::{IntoLuaErr, Module};
use super::{AgentContext, FROZEN, arg_err, chunks, error_text, to_json_or_nil, to_lua};

/// Wraps the task's tables in read-only proxies. Each proxy's metatable keeps
/// the table it shows under the [`FROZEN`] key, so storing a part of the task
/// (`blackboard.set("c", task.constraints)`) stores its contents.
pub(super) const FREEZE: &str = r#"
local data, frozen = ...
local function freeze(t, path)
  for k, v in pairs(t) do
    if type(v) == "table" then t[k] = freeze(v, path .. "." .. tostring(k)) end
  end
  return setmetatable({}, {
    __index = t,
    __newindex = function(_, k)
      error(path .. " is read-only (tried to set '" .. tostring(k) .. "')", 2)
    end,
    __len = function() return #t end,
    __pairs = function() return next, t, nil end,
    __metatable = false,
    [frozen] = t,
  })
end
return freeze(data, "task")
"#;

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let data: Table = lua
        .to_value(&*ctx.coord.task)?
        .as_table()
        .cloned()
        .unwrap_or(lua.create_table()?);
    // Spawn conditions, start roles and the success condition are the host's business, not the scripts'.
    data.set("agents", LuaValue::Nil)?;
    data.set("spawn", LuaValue::Nil)?;
    data.set("success", LuaValue::Nil)?;
    let m = Module::new(lua, ctx)?;
    data.set("output", m.store_fn(output)?)?;
    data.set("outputs", m.store_fn(outputs)?)?;
    let freeze: Function = chunks::host(lua, "task", FREEZE)?;
    freeze.call((data, FROZEN))
}

/// `task.output(name, value)`: records an output of the run (nil removes
/// it, as `blackboard.set(key, nil)` deletes).
async fn output(
    lua: Lua,
    c: Arc<AgentContext>,
    (name, value): (LuaValue, LuaValue),
) -> mlua::Result<()> {
    // Converted here: reached through the read-only `task` proxy, the
    // function has no name in a traceback to put in front of mlua's error.
    let name = String::from_lua(name, &lua).map_err(|e| {
        arg_err(
            "task.output",
            format!("argument #1 'name' {}", error_text::must_be(&e)),
        )
    })?;
    // `[success] outputs` names them, and the report lists them by name.
    if name.is_empty() {
        return Err(arg_err(
            "task.output",
            "argument #1 'name' must not be empty",
        ));
    }
    let json = to_json_or_nil(&lua, value, || format!("task.output('{name}')"))?;
    c.coord
        .blackboard
        .set_output(&name, json.as_ref())
        .await
        .into_lua_err()
}

/// `task.outputs()`: every output recorded so far, by name.
async fn outputs(lua: Lua, c: Arc<AgentContext>, (): ()) -> mlua::Result<Table> {
    let out = lua.create_table()?;
    for (name, v) in c.coord.blackboard.outputs().await.into_lua_err()? {
        out.set(name, to_lua(&lua, &v)?)?;
    }
    Ok(out)
}
