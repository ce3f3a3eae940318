//! `bus`: messages between agents.
//!
//! `send(to, type, payload)`, `broadcast(type, payload)`, `receive([timeout_ms])`,
//! `subscribe([type,] fn)`. Messages are tables `{id, from, to, type, payload, attempts}`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mlua::{Function, Lua, Table, Value as LuaValue};

use super::{AgentContext, arg_err, chunks, host_err, interned, millis, store_fn, to_json, to_lua};
use crate::coordination::BROADCAST;
use crate::error::Error;
use crate::store::{Delivery, Envelope};

/// Name of the registry table holding `{type, fn}` subscriptions.
pub const HANDLERS: &str = "orrery.handlers";

/// Name of the registry entry holding [`PACK`].
const MESSAGE: &str = "orrery.message";

/// Builds a message table from its fields. A table constructor in Lua is far
/// cheaper than six `Table::set` calls from Rust, each a protected call once
/// the VM has a memory limit.
const PACK: &str = r#"
return function(id, from, to, kind, payload, attempts)
  if id == nil then return nil end
  return { id = id, from = from, to = to, type = kind, payload = payload, attempts = attempts }
end
"#;

/// `receive` tries without waiting first, so a waiting message costs no coroutine yield.
const RECEIVE: &str = r#"
local try_receive, wait_receive, pack, default_timeout = ...
return function(timeout)
  if timeout ~= nil and type(timeout) ~= "number" then
    error("bus.receive: expected timeout in ms (number), got " .. type(timeout), 2)
  end
  local msg = pack(try_receive())
  if msg ~= nil then return msg end
  timeout = timeout or default_timeout
  if timeout <= 0 then return nil end
  return pack(wait_receive(timeout))
end
"#;

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let embedded = ctx.embedded();

    let c = ctx.clone();
    t.set(
        "send",
        store_fn(
            lua,
            embedded,
            move |lua, (to, kind, payload): (String, String, LuaValue)| {
                let c = c.clone();
                let payload = to_json(&lua, payload, || format!("bus.send('{to}', '{kind}')"));
                async move { send(&c, to, kind, payload?).await }
            },
        )?,
    )?;

    let c = ctx.clone();
    t.set(
        "broadcast",
        store_fn(
            lua,
            embedded,
            move |lua, (kind, payload): (String, LuaValue)| {
                let c = c.clone();
                let payload = to_json(&lua, payload, || format!("bus.broadcast('{kind}')"));
                async move { send(&c, BROADCAST.into(), kind, payload?).await }
            },
        )?,
    )?;

    let c = ctx.clone();
    let try_receive = store_fn(lua, embedded, move |lua, ()| {
        let c = c.clone();
        async move { receive(&lua, &c, Duration::ZERO).await }
    })?;
    let c = ctx.clone();
    let wait_receive = lua.create_async_function(move |lua, timeout_ms: f64| {
        let c = c.clone();
        async move { receive(&lua, &c, millis(timeout_ms)).await }
    })?;
    let pack: Function = chunks::host(lua, "bus.message", PACK)?.call(())?;
    lua.set_named_registry_value(MESSAGE, &pack)?;
    let receive: Function = chunks::host(lua, "bus.receive", RECEIVE)?.call((
        try_receive,
        wait_receive,
        pack,
        ctx.coord.config.message_timeout,
    ))?;
    t.set("receive", receive)?;

    let c = ctx.clone();
    t.set(
        "subscribe",
        lua.create_function(move |lua, (a, b): (LuaValue, Option<Function>)| {
            let (kind, f) = match (a, b) {
                (LuaValue::Function(f), None) => (None, f),
                (LuaValue::String(k), Some(f)) => (Some(k.to_str()?.to_string()), f),
                (a, _) => {
                    return Err(arg_err(
                        "bus.subscribe",
                        format!("expected ([type,] function), got {}", a.type_name()),
                    ));
                }
            };
            let handlers: Table = lua.named_registry_value(HANDLERS)?;
            let entry = lua.create_table()?;
            entry.set("type", kind)?;
            entry.set("fn", f)?;
            handlers.push(entry)?;
            c.local.lock().has_handlers = true;
            Ok(())
        })?,
    )?;
    Ok(t)
}

async fn send(
    c: &AgentContext,
    to: String,
    kind: String,
    payload: serde_json::Value,
) -> mlua::Result<String> {
    let id = c
        .coord
        .bus
        .send(&c.id, to, kind, payload)
        .await
        .map_err(host_err)?;
    c.counters.messages_sent.fetch_add(1, Ordering::Relaxed);
    Ok(id)
}

/// A message's fields in [`PACK`]'s argument order: id, from, to, type,
/// payload, attempts (all nil for no message). A tuple, not a `MultiValue`,
/// so returning it allocates nothing on the Rust side.
type MessageFields = (LuaValue, LuaValue, LuaValue, LuaValue, LuaValue, LuaValue);

/// Acknowledges what the agent held, then takes the next message.
async fn receive(lua: &Lua, c: &AgentContext, wait: Duration) -> mlua::Result<MessageFields> {
    // The list goes back afterwards, so its buffer serves every receive.
    let mut held = std::mem::take(&mut c.local.lock().held);
    for d in held.drain(..) {
        c.coord.bus.ack(&d).await.map_err(host_err)?;
    }
    let taken = c
        .coord
        .bus
        .take(&c.queues, &c.id, wait)
        .await
        .map_err(host_err)?;
    let fields = match taken {
        Some(delivery) => {
            let fields = message_fields(lua, &delivery.envelope)?;
            c.counters.messages_received.fetch_add(1, Ordering::Relaxed);
            held.push(delivery);
            fields
        }
        None => Default::default(),
    };
    c.local.lock().held = held;
    Ok(fields)
}

fn message_fields(lua: &Lua, e: &Envelope) -> mlua::Result<MessageFields> {
    Ok((
        LuaValue::String(lua.create_string(&e.id)?),
        interned(lua, &e.from)?,
        interned(lua, &e.to)?,
        interned(lua, &e.kind)?,
        to_lua(lua, &e.payload)?,
        LuaValue::Integer(e.attempts.into()),
    ))
}

/// The Lua form of a message: `{id, from, to, type, payload, attempts}`.
pub fn message_table(lua: &Lua, e: &Envelope) -> mlua::Result<Table> {
    let pack: Function = lua.named_registry_value(MESSAGE)?;
    pack.call(message_fields(lua, e)?)
}

/// Settles the messages an agent took with `receive` during a callback:
/// acknowledged when it returned, given back when it failed with `failure`.
pub async fn settle_held(c: &AgentContext, failure: Option<&Error>) -> crate::error::Result<()> {
    let held: Vec<Delivery> = std::mem::take(&mut c.local.lock().held);
    for d in &held {
        match failure {
            None => c.coord.bus.ack(d).await?,
            Some(e) => {
                c.coord.bus.nack(d, &c.id, e).await?;
            }
        }
    }
    Ok(())
}
