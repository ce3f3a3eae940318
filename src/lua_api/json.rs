//! `json`: `encode(value [, {pretty = true}])`, `decode(text)`, and `null`.
//! Both refuse texts longer than `max_value_bytes`.

use mlua::{Lua, LuaSerdeExt, Table, Value as LuaValue};

use super::{arg_err, to_json, to_lua};

pub(super) fn register(lua: &Lua, max_bytes: usize) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let too_big = move |func: &str| {
        arg_err(
            func,
            format!("text is larger than max_value_bytes ({max_bytes} bytes)"),
        )
    };
    t.set(
        "encode",
        lua.create_function(move |lua, (value, opts): (LuaValue, Option<Table>)| {
            let json = to_json(lua, value, || "json.encode".into())?;
            let pretty = opts
                .map(|o| o.get::<bool>("pretty").unwrap_or(false))
                .unwrap_or(false);
            let text = if pretty {
                serde_json::to_string_pretty(&json)
            } else {
                serde_json::to_string(&json)
            };
            let text = text.map_err(|e| arg_err("json.encode", e))?;
            if text.len() > max_bytes {
                return Err(too_big("json.encode"));
            }
            Ok(text)
        })?,
    )?;
    t.set(
        "decode",
        lua.create_function(move |lua, text: mlua::LuaString| {
            if text.as_bytes().len() > max_bytes {
                return Err(too_big("json.decode"));
            }
            let value: serde_json::Value =
                serde_json::from_slice(&text.as_bytes()).map_err(|e| arg_err("json.decode", e))?;
            to_lua(lua, &value)
        })?,
    )?;
    t.set("null", lua.null())?;
    Ok(t)
}
