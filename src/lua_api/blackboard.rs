//! `blackboard`: shared key/value state of the task.
//!
//! `set(key, value)` (nil deletes), `get(key)`, `delete(key)`, `keys([prefix])`,
//! `cas(key, expected, new)`, `update(key, fn)`, `watch(pattern, fn)`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::{AnyUserData, Function, Lua, Table, Value as LuaValue};

use super::module::{IntoLuaErr, Module};
use super::{
    AgentContext, arg_err, chunks, must_settle, settle, settle_only, settle_writes, to_json,
    to_json_or_nil, to_lua,
};

/// Name of the registry table holding this agent's watches: `{pattern, fn}` pairs.
pub const WATCHES: &str = "orrery.watches";

/// `set` on a server store: the write is sent without waiting — by
/// `set_fast` (a C function, see `fast`) for a value that converts plainly
/// (see `stack_json`) when nothing is to be settled first, else by
/// `set_now` — unless older writes must be settled first (it returns false)
/// or the quota ledger must look at the store (nil: the waiting `set_wait`
/// does it). `set(key, nil)` deletes, and waits.
pub(super) const SET: &str = r#"
local set_fast, set_now, settle, delete, set_wait = ...
return function(key, value)
  if set_fast(key, value) then return end
  if value == nil then
    delete(key)
    return
  end
  while true do
    local sent = set_now(key, value)
    if sent then return end
    if sent == nil then
      set_wait(key, value)
      return
    end
    settle()
  end
end
"#;

/// `get` on a server store: a value the agent wrote since it last observed
/// the store, once its writes are acknowledged, is read back without asking
/// (`cached`, a C function: see `fast`); anything else is fetched.
pub(super) const GET: &str = r#"
local cached, fetch = ...
return function(key)
  local value = cached(key)
  if value ~= nil then return value end
  -- Not a tail call: an error names blackboard.get, the frame a tail call drops.
  value = fetch(key)
  return value
end
"#;

/// Most values an agent keeps for reading back its own writes.
const MAX_OWN_WRITES: usize = 4096;

/// The values an agent wrote since it last observed the store (any store
/// call but a write, `sleep`, the end of a callback): until then, reading
/// one back, once the agent's writes are acknowledged, returns it without a
/// round trip. That is read-your-writes: what others wrote meanwhile cannot
/// have reached the agent in any other way, so the agent cannot tell its
/// read from one made before their writes.
#[derive(Default)]
pub struct OwnWrites {
    /// Hashed with [`Fast`](crate::fast_map::Fast): looked up on every
    /// `get` and written on every `set`, where SipHash showed in profiles.
    values: crate::fast_map::FastMap<String, (serde_json::Value, Instant)>,
}

impl OwnWrites {
    /// Keeps `value` as written under `key`, until `expires`.
    fn keep(&mut self, key: String, value: serde_json::Value, expires: Instant) {
        if self.values.len() < MAX_OWN_WRITES || self.values.contains_key(&key) {
            self.values.insert(key, (value, expires));
        }
    }

    /// The value written under `key`, if it has not expired.
    pub(super) fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.values
            .get(key)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(v, _)| v)
    }

    /// The agent observed the store: forget every value.
    pub fn forget(&mut self) {
        if !self.values.is_empty() {
            self.values.clear();
        }
    }
}

/// `update` written in Lua over a read that keeps what it read and a
/// compare-and-set against that: the function may call host functions, which
/// a Rust callback could not let it do, and may change the table it is given
/// in place (the natural Lua idiom), since the compare is against the value
/// as read, not against that table.
pub(super) const UPDATE: &str = r#"
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
    let m = Module::new(lua, ctx)?;
    let set_wait = m.store("set", set)?;
    if ctx.embedded() {
        m.store("get", get)?;
    } else {
        let cached = super::fast::cached(lua, ctx)?;
        let get: Function = chunks::host(lua, "blackboard.get", GET)?
            .call((cached, m.wait_fn(ctx.clone(), fetch)?))?;
        m.set("get", get)?;
    }
    let delete = m.store("delete", delete)?;
    if !ctx.embedded() {
        let set: Function = chunks::host(lua, "blackboard.set", SET)?.call((
            super::fast::set(lua, ctx)?,
            m.store_now_fn(set_now)?,
            m.wait_fn(ctx.clone(), settle)?,
            delete,
            set_wait,
        ))?;
        m.set("set", set)?;
    }
    m.store("keys", keys)?;
    m.store("cas", cas)?;
    let update: Function = chunks::host(lua, "blackboard.update", UPDATE)?
        .call((m.store_fn(read)?, m.store_fn(swap)?))?;
    m.set("update", update)?;
    m.store("watch", watch)?;
    Ok(m.finish())
}

/// `blackboard.set(key, value)`, waiting for the store; as with a Lua table
/// field, setting nil removes the key.
async fn set(lua: Lua, c: Arc<AgentContext>, (key, value): (String, LuaValue)) -> mlua::Result<()> {
    let json = to_json_or_nil(&lua, value, || format!("blackboard.set('{key}')"))?;
    let bb = &c.coord.blackboard;
    match json {
        Some(v) => bb.set(&key, &v).await.into_lua_err(),
        None => bb.delete(&key).await.map(|_| ()).into_lua_err(),
    }
}

/// `blackboard.set` on a server store without waiting: true when sent,
/// false when older writes must be settled first, nil when the quota ledger
/// must look at the store (the waiting [`set`] does it).
fn set_now(
    lua: &Lua,
    c: &Arc<AgentContext>,
    (key, value): (String, LuaValue),
) -> mlua::Result<Option<bool>> {
    if must_settle(c) {
        return Ok(Some(false));
    }
    let json = to_json(lua, value, || format!("blackboard.set('{key}')"))?;
    let sent = send_set(c, key, json).into_lua_err()?;
    Ok(sent.then_some(true))
}

/// Sends the set of `json` under `key` without waiting and keeps it for
/// reading back; false when the quota ledger must look at the store first
/// (nothing is sent then). Also `blackboard.set`'s C fast path (`fast`).
pub(super) fn send_set(
    c: &AgentContext,
    key: String,
    json: serde_json::Value,
) -> crate::error::Result<bool> {
    let Some(pending) = c.coord.blackboard.set_nowait(&key, &json)? else {
        return Ok(false);
    };
    let ttl = Duration::from_secs(c.coord.config.blackboard_ttl);
    let mut local = c.local.lock();
    local.writes.push(pending);
    local.own_writes.keep(key, json, Instant::now() + ttl);
    Ok(true)
}

/// `blackboard.get(key)` on the embedded store.
async fn get(lua: Lua, c: Arc<AgentContext>, key: String) -> mlua::Result<LuaValue> {
    match c.coord.blackboard.get(&key).await.into_lua_err()? {
        Some(v) => to_lua(&lua, &v),
        None => Ok(LuaValue::Nil),
    }
}

/// `blackboard.get(key)` on a server store, asking it (see [`get_after_writes`]).
async fn fetch(lua: Lua, c: Arc<AgentContext>, key: String) -> mlua::Result<LuaValue> {
    match get_after_writes(&c, &key).await.into_lua_err()? {
        Some(v) => to_lua(&lua, &v),
        None => Ok(LuaValue::Nil),
    }
}

/// `blackboard.delete(key)`: true when the key was there.
async fn delete(_: Lua, c: Arc<AgentContext>, key: String) -> mlua::Result<bool> {
    c.coord.blackboard.delete(&key).await.into_lua_err()
}

/// `blackboard.keys([prefix])`: the keys (starting with `prefix`).
async fn keys(_: Lua, c: Arc<AgentContext>, prefix: Option<String>) -> mlua::Result<Vec<String>> {
    let prefix = prefix.as_deref().unwrap_or("");
    c.coord.blackboard.keys(prefix).await.into_lua_err()
}

/// `blackboard.cas(key, expected, new)`: true when the value was `expected`
/// and is now `new`.
async fn cas(
    lua: Lua,
    c: Arc<AgentContext>,
    (key, expected, new): (String, LuaValue, LuaValue),
) -> mlua::Result<bool> {
    let expected = to_json_or_nil(&lua, expected, || {
        format!("blackboard.cas('{key}') expected")
    })?;
    let new = to_json_or_nil(&lua, new, || format!("blackboard.cas('{key}') new"))?;
    compare_and_set(&c, &key, expected, new).await
}

/// The read of `update`: the current value, and what it is as stored.
async fn read(
    lua: Lua,
    c: Arc<AgentContext>,
    key: String,
) -> mlua::Result<(LuaValue, AnyUserData)> {
    let value = c.coord.blackboard.get(&key).await.into_lua_err()?;
    let current = match &value {
        Some(v) => to_lua(&lua, v)?,
        None => LuaValue::Nil,
    };
    Ok((current, lua.create_userdata(Seen(value))?))
}

/// The compare-and-set of `update`, against the value as [`read`] saw it.
async fn swap(
    lua: Lua,
    c: Arc<AgentContext>,
    (key, seen, new): (String, AnyUserData, LuaValue),
) -> mlua::Result<bool> {
    let expected = seen.borrow::<Seen>()?.0.clone();
    let new = to_json_or_nil(&lua, new, || format!("blackboard.update('{key}')"))?;
    compare_and_set(&c, &key, expected, new).await
}

/// `blackboard.watch(pattern, fn)`: `fn(key, value)` on every change of a
/// key `pattern` matches.
async fn watch(
    lua: Lua,
    c: Arc<AgentContext>,
    (pattern, f): (String, LuaValue),
) -> mlua::Result<()> {
    let LuaValue::Function(f) = f else {
        return Err(arg_err(
            "blackboard.watch",
            format!("argument #2 'fn' must be a function, got {}", f.type_name()),
        ));
    };
    let watches: Table = lua.named_registry_value(WATCHES)?;
    let entry = lua.create_table()?;
    entry.set("pattern", pattern)?;
    entry.set("fn", f)?;
    watches.push(entry)?;
    let needs_subscription = c.local.lock().watch_rx.is_none();
    if needs_subscription {
        let rx = c.coord.blackboard.subscribe().await.into_lua_err()?;
        c.local.lock().watch_rx = Some(rx);
    }
    c.local.lock().has_handlers = true;
    Ok(())
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
        .into_lua_err()
}

/// True when `key` matches a watch pattern: exact, or a prefix ending in `*`.
pub fn pattern_matches(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => pattern == key,
    }
}

/// Reads `key` after the agent's writes are acknowledged. A value the agent
/// wrote itself since it last observed the store is its answer; otherwise
/// the read is sent before the writes are settled (one round trip for both
/// when they are still on the wire), and sent again if one of them had to be
/// sent again. A read from the store observes it.
async fn get_after_writes(
    c: &AgentContext,
    key: &str,
) -> crate::error::Result<Option<serde_json::Value>> {
    if c.local.lock().own_writes.get(key).is_some() {
        settle_only(c).await?;
        if let Some(v) = c.local.lock().own_writes.get(key) {
            return Ok(Some(v.clone()));
        }
    }
    if must_settle(c) {
        settle_only(c).await?;
    }
    let sent = c.coord.blackboard.get_sent(key)?;
    let resent = settle_writes(c).await?;
    if resent {
        return c.coord.blackboard.get(key).await;
    }
    Ok(sent.await?)
}
