//! `blackboard`: shared key/value state of the task.
//!
//! `set(key, value)` (nil deletes), `get(key)`, `delete(key)`, `keys([prefix])`,
//! `cas(key, expected, new)`, `update(key, fn)`, `watch(pattern, fn)`.

use std::sync::Arc;

use mlua::{Function, Lua, Table, Value as LuaValue};

use super::{AgentContext, arg_err, chunks, host_err, store_fn, to_json_or_nil, to_lua};

/// Name of the registry table holding this agent's watches: `{pattern, fn}` pairs.
pub const WATCHES: &str = "orrery.watches";

/// `update` written in Lua over a read that keeps what it read and a
/// compare-and-set against that: the function may call host functions, which
/// a Rust callback could not let it do, and may change the table it is given
/// in place (the natural Lua idiom), since the compare is against the value
/// as read, not against that table.
const UPDATE: &str = r#"
local read, swap = ...
return function(key, fn)
  if type(fn) ~= "function" then
    error("blackboard.update: argument #2 'fn' must be a function, got " .. type(fn), 2)
  end
  for _ = 1, 1000 do
    local current, seen = read(key)
    local new = fn(current)
    if swap(key, seen, new) then return new end
  end
  error("blackboard.update: key '" .. tostring(key) .. "' changed under us 1000 times in a row", 2)
end
"#;

/// What `update` read, as stored: its compare-and-set expects this, whatever
/// the update function did to the Lua table it was given.
struct Seen(Option<serde_json::Value>);

impl mlua::UserData for Seen {}

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let embedded = ctx.embedded();

    let c = ctx.clone();
    t.set(
        "set",
        store_fn(
            lua,
            embedded,
            move |lua, (key, value): (String, LuaValue)| {
                let c = c.clone();
                // As with a Lua table field, setting nil removes the key.
                let json = to_json_or_nil(&lua, value, || format!("blackboard.set('{key}')"));
                async move {
                    let bb = &c.coord.blackboard;
                    match json? {
                        Some(v) => bb.set(&key, &v).await.map_err(host_err),
                        None => bb.delete(&key).await.map(|_| ()).map_err(host_err),
                    }
                }
            },
        )?,
    )?;

    let c = ctx.clone();
    t.set(
        "get",
        store_fn(lua, embedded, move |lua, key: String| {
            let c = c.clone();
            async move {
                match c.coord.blackboard.get(&key).await.map_err(host_err)? {
                    Some(v) => to_lua(&lua, &v),
                    None => Ok(LuaValue::Nil),
                }
            }
        })?,
    )?;

    let c = ctx.clone();
    t.set(
        "delete",
        store_fn(lua, embedded, move |_, key: String| {
            let c = c.clone();
            async move { c.coord.blackboard.delete(&key).await.map_err(host_err) }
        })?,
    )?;

    let c = ctx.clone();
    t.set(
        "keys",
        store_fn(lua, embedded, move |_, prefix: Option<String>| {
            let c = c.clone();
            async move {
                c.coord
                    .blackboard
                    .keys(prefix.as_deref().unwrap_or(""))
                    .await
                    .map_err(host_err)
            }
        })?,
    )?;

    let c = ctx.clone();
    let cas = store_fn(
        lua,
        embedded,
        move |lua, (key, expected, new): (String, LuaValue, LuaValue)| {
            let c = c.clone();
            let expected = to_json_or_nil(&lua, expected, || {
                format!("blackboard.cas('{key}') expected")
            });
            let new = to_json_or_nil(&lua, new, || format!("blackboard.cas('{key}') new"));
            async move { compare_and_set(&c, &key, expected?, new?).await }
        },
    )?;
    t.set("cas", &cas)?;

    let c = ctx.clone();
    let read = store_fn(lua, embedded, move |lua, key: String| {
        let c = c.clone();
        async move {
            let value = c.coord.blackboard.get(&key).await.map_err(host_err)?;
            let current = match &value {
                Some(v) => to_lua(&lua, v)?,
                None => LuaValue::Nil,
            };
            Ok((current, lua.create_userdata(Seen(value))?))
        }
    })?;
    let c = ctx.clone();
    let swap = store_fn(
        lua,
        embedded,
        move |lua, (key, seen, new): (String, mlua::AnyUserData, LuaValue)| {
            let c = c.clone();
            let expected = seen.borrow::<Seen>().map(|s| s.0.clone());
            let new = to_json_or_nil(&lua, new, || format!("blackboard.update('{key}')"));
            async move { compare_and_set(&c, &key, expected?, new?).await }
        },
    )?;
    let update: Function = chunks::host(lua, "blackboard.update", UPDATE)?.call((read, swap))?;
    t.set("update", update)?;

    let c = ctx.clone();
    t.set(
        "watch",
        store_fn(
            lua,
            embedded,
            move |lua, (pattern, f): (String, LuaValue)| {
                let c = c.clone();
                let checked = match f {
                    LuaValue::Function(f) => Ok(f),
                    other => Err(arg_err(
                        "blackboard.watch",
                        format!(
                            "argument #2 'fn' must be a function, got {}",
                            other.type_name()
                        ),
                    )),
                };
                async move {
                    let f = checked?;
                    let watches: Table = lua.named_registry_value(WATCHES)?;
                    let entry = lua.create_table()?;
                    entry.set("pattern", pattern)?;
                    entry.set("fn", f)?;
                    watches.push(entry)?;
                    let needs_subscription = c.local.lock().watch_rx.is_none();
                    if needs_subscription {
                        let rx = c.coord.blackboard.subscribe().await.map_err(host_err)?;
                        c.local.lock().watch_rx = Some(rx);
                    }
                    c.local.lock().has_handlers = true;
                    Ok(())
                }
            },
        )?,
    )?;
    Ok(t)
}

async fn compare_and_set(
    c: &AgentContext,
    key: &str,
    expected: Option<serde_json::Value>,
    new: Option<serde_json::Value>,
) -> mlua::Result<bool> {
    c.coord
        .blackboard
        .compare_and_set(key, expected.as_ref(), new.as_ref())
        .await
        .map_err(host_err)
}

/// True when `key` matches a watch pattern: exact, or a prefix ending in `*`.
pub fn pattern_matches(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => pattern == key,
    }
}
