//! `json`: `encode(value [, {pretty = true}])`, `decode(text)`, and `null`.

use mlua::{Lua, LuaSerdeExt, Table, Value as LuaValue};

use super::{arg_err, to_json, to_lua};

pub(super) fn register(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "encode",
        lua.create_function(|lua, (value, opts): (LuaValue, Option<Table>)| {
            let json = to_json(lua, value, || "json.encode".into())?;
            let pretty = opts
                .map(|o| o.get::<bool>("pretty").unwrap_or(false))
                .unwrap_or(false);
            let text = if pretty {
                serde_json::to_string_pretty(&json)
            } else {
                serde_json::to_string(&json)
            };
            text.map_err(|e| arg_err("json.encode", e))
        })?,
    )?;
    t.set(
        "decode",
        lua.create_function(|lua, text: mlua::LuaString| {
            let value: serde_json::Value =
                serde_json::from_slice(&text.as_bytes()).map_err(|e| arg_err("json.decode", e))?;
            to_lua(lua, &value)
        })?,
    )?;
    t.set("null", lua.null())?;
    Ok(t)
}
