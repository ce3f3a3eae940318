//! `json`: `encode(value [, {pretty = true}])`, `decode(text)`, and `null`.
//! Both refuse texts longer than `max_value_bytes`.

use std::sync::Arc;

use mlua::{Lua, LuaSerdeExt, LuaString, Table, Value as LuaValue};

use super::module::Module;
use super::options::{self, FromOptions, OptionError, Options};
use super::{AgentContext, MaxValueBytes, arg_err, to_json, to_lua};

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let m = Module::new(lua, ctx)?;
    let max_bytes = MaxValueBytes(ctx.coord.config.max_value_bytes);
    m.set("encode", m.sync_fn(max_bytes, encode)?)?;
    m.set("decode", m.sync_fn(max_bytes, decode)?)?;
    m.set("null", lua.null())?;
    Ok(m.finish())
}

/// The options of `json.encode`.
pub(super) struct EncodeOptions {
    /// Indented, one member a line.
    pretty: bool,
}

impl FromOptions for EncodeOptions {
    const NAMES: &'static [&'static str] = &["pretty"];

    fn from_options(o: &Options) -> Result<Self, OptionError> {
        Ok(EncodeOptions {
            pretty: o.boolean("pretty")?.unwrap_or(false),
        })
    }
}

/// `json.encode(value [, {pretty = true}])`: the JSON text of `value`.
fn encode(
    lua: &Lua,
    max: &MaxValueBytes,
    (value, opts): (LuaValue, Option<Table>),
) -> mlua::Result<String> {
    let opts: EncodeOptions = options::decode("json.encode", opts)?;
    let json = to_json(lua, value, || "json.encode".into())?;
    let text = if opts.pretty {
        serde_json::to_string_pretty(&json)
    } else {
        serde_json::to_string(&json)
    };
    let text = text.map_err(|e| arg_err("json.encode", e))?;
    if text.len() > max.0 {
        return Err(too_big("json.encode", max.0));
    }
    Ok(text)
}

/// `json.decode(text)`: the value `text` holds (JSON null as `json.null`).
fn decode(lua: &Lua, max: &MaxValueBytes, text: LuaString) -> mlua::Result<LuaValue> {
    if text.as_bytes().len() > max.0 {
        return Err(too_big("json.decode", max.0));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&text.as_bytes()).map_err(|e| arg_err("json.decode", e))?;
    to_lua(lua, &value)
}

fn too_big(func: &str, max_bytes: usize) -> mlua::Error {
    arg_err(
        func,
        format!("text is larger than max_value_bytes ({max_bytes} bytes)"),
    )
}
