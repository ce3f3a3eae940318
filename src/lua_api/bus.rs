//! `bus`: messages between agents.
//!
//! `send(to, type, payload)`, `broadcast(type, payload [, role])`,
//! `receive([timeout_ms])`, `subscribe([type,] fn)`, and request/reply:
//! `reply(msg, payload [, type])`, `request(to, type, payload [, timeout_ms])`,
//! `replies(id, n [, timeout_ms])` / `replies(ids [, timeout_ms])`. Messages
//! are tables `{id, from, to, type, payload, attempts, reply_to}`.
//!
//! While an agent waits for replies it takes the messages of its own queue
//! only; those that are not the replies it waits for are kept, in order, and
//! handed to it first afterwards (by its event loop or `receive`).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::Instrument;

use mlua::{Function, Lua, Table, Value as LuaValue};

use super::module::{IntoLuaErr, Module};
use super::{
    AgentContext, arg_err, chunks, interned3, millis, must_settle, settle, settle_writes, to_json,
    to_lua,
};
use crate::error::Error;
use crate::store::{Delivery, Envelope, Pending};

/// Name of the registry table holding `{type, fn}` subscriptions.
pub const HANDLERS: &str = "orrery.handlers";

/// Name of the registry entry holding [`PACK`].
const MESSAGE: &str = "orrery.message";

/// Builds a message table from its fields. A table constructor in Lua is far
/// cheaper than six `Table::set` calls from Rust, each a protected call once
/// the VM has a memory limit.
pub(super) const PACK: &str = r#"
return function(id, from, to, kind, payload, attempts, reply_to)
  if id == nil then return nil end
  return { id = id, from = from, to = to, type = kind, payload = payload, attempts = attempts,
           reply_to = reply_to }
end
"#;

/// `send`: sent without waiting when the recipient is known here and no
/// older write must be settled first — by `send_fast` (a C function, see
/// `fast`) for a payload that converts plainly (see `stack_json`), else by
/// `send_now` (a plain function call); otherwise the waiting `send_wait`.
pub(super) const SEND: &str = r#"
local send_fast, send_now, settle, send_wait = ...
return function(to, kind, payload)
  local id = send_fast(to, kind, payload)
  if id ~= nil then return id end
  id = send_now(to, kind, payload)
  if id ~= nil then return id end
  settle()
  -- Not a tail call: an error names bus.send, the frame a tail call drops.
  id = send_wait(to, kind, payload)
  return id
end
"#;

/// `receive` takes a message the store holds here (queued in the embedded
/// store, read ahead from a server) with the C function `receive_fast`
/// (see `fast`; false: none here; nil: the timeout is not a number, and
/// the plain function `receive_now` raises the error),
/// then asks the store without waiting, and only then waits: a waiting
/// message costs no coroutine yield.
pub(super) const RECEIVE: &str = r#"
local receive_fast, receive_now, try_receive, wait_receive, pack, default_timeout = ...
return function(timeout)
  local msg = receive_fast(timeout)
  if msg then return msg end
  if msg == nil then
    msg = pack(receive_now(timeout))
    if msg ~= nil then return msg end
  end
  msg = pack(try_receive())
  if msg ~= nil then return msg end
  timeout = timeout or default_timeout
  if timeout <= 0 then return nil end
  return pack(wait_receive(timeout))
end
"#;

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let m = Module::new(lua, ctx)?;
    let send: Function = chunks::host(lua, "bus.send", SEND)?.call((
        super::fast::send(lua, ctx)?,
        m.store_now_fn(send_now)?,
        m.wait_fn(ctx.clone(), settle)?,
        m.store_fn(send_wait)?,
    ))?;
    m.set("send", send)?;
    m.store("broadcast", broadcast)?;
    m.store("reply", reply)?;
    m.wait("request", request)?;
    m.wait("replies", replies)?;

    let pack: Function = chunks::host(lua, "bus.message", PACK)?.call(())?;
    lua.set_named_registry_value(MESSAGE, &pack)?;
    let receive: Function = chunks::host(lua, "bus.receive", RECEIVE)?.call((
        super::fast::receive(lua, ctx)?,
        m.store_now_fn(receive_now)?,
        m.store_fn(try_receive)?,
        m.wait_fn(ctx.clone(), wait_receive)?,
        pack,
        ctx.coord.config.message_timeout,
    ))?;
    m.set("receive", receive)?;
    m.sync("subscribe", subscribe)?;
    Ok(m.finish())
}

/// `bus.send` without waiting: the message id, or nil when the message must
/// go by [`send_wait`] (older writes to settle first, or a recipient not
/// known here).
fn send_now(
    lua: &Lua,
    c: &Arc<AgentContext>,
    (to, kind, payload): (String, String, LuaValue),
) -> mlua::Result<Option<String>> {
    if must_settle(c) {
        return Ok(None);
    }
    let payload = to_json(lua, payload, || format!("bus.send('{to}', '{kind}')"))?;
    let sent = c
        .coord
        .bus
        .send_now(c.id.as_str(), to.into(), kind.into(), payload);
    let Some((id, pending)) = sent.into_lua_err()? else {
        return Ok(None);
    };
    c.local.lock().writes.push(counted(c, pending));
    Ok(Some(id.to_string()))
}

/// `pending`, a send of the agent of `c`, counted once it is in its queue:
/// at once on the embedded store, when settled on a server (which may
/// refuse it). Also the count of `bus.send`'s C fast path (`fast`).
pub(super) fn counted(c: &AgentContext, pending: Pending) -> Pending {
    if c.embedded() {
        c.counters.messages_sent.fetch_add(1, Ordering::Relaxed);
        return pending;
    }
    let counters = c.counters.clone();
    pending.on_success(move || {
        counters.messages_sent.fetch_add(1, Ordering::Relaxed);
    })
}

/// `bus.send(to, type, payload)`, waiting for the store: the message id.
async fn send_wait(
    lua: Lua,
    c: Arc<AgentContext>,
    (to, kind, payload): (String, String, LuaValue),
) -> mlua::Result<String> {
    let payload = to_json(&lua, payload, || format!("bus.send('{to}', '{kind}')"))?;
    send(&c, to, kind, payload).await
}

/// `bus.broadcast(type, payload [, role])`: the message id and how many
/// agents it reached.
async fn broadcast(
    lua: Lua,
    c: Arc<AgentContext>,
    (kind, payload, role): (String, LuaValue, Option<String>),
) -> mlua::Result<(String, usize)> {
    let payload = to_json(&lua, payload, || format!("bus.broadcast('{kind}')"))?;
    let (id, reached) = c
        .coord
        .bus
        .broadcast(&c.id, kind, payload, role.as_deref())
        .await
        .into_lua_err()?;
    c.counters.messages_sent.fetch_add(1, Ordering::Relaxed);
    Ok((id, reached))
}

/// `bus.reply(msg, payload [, type])`: the reply's message id.
async fn reply(
    lua: Lua,
    c: Arc<AgentContext>,
    (msg, payload, kind): (LuaValue, LuaValue, Option<String>),
) -> mlua::Result<String> {
    let (id, from) = replied_message(&msg)?;
    let payload = to_json(&lua, payload, || "bus.reply".to_string())?;
    let kind = kind.unwrap_or_else(|| "reply".to_string());
    let sent = c
        .coord
        .bus
        .reply(&c.id, from, kind, payload, id)
        .await
        .into_lua_err()?;
    c.counters.messages_sent.fetch_add(1, Ordering::Relaxed);
    Ok(sent)
}

/// `bus.request(to, type, payload [, timeout_ms])`: sends, then waits for
/// the reply and returns it.
async fn request(
    lua: Lua,
    c: Arc<AgentContext>,
    (to, kind, payload, timeout): (String, String, LuaValue, Option<f64>),
) -> mlua::Result<Table> {
    let payload = to_json(&lua, payload, || format!("bus.request('{to}', '{kind}')"))?;
    let wait = timeout.map_or(default_wait(&c), millis);
    let id = send(&c, to.clone(), kind.clone(), payload).await?;
    let mut replies = await_replies(&c, &[(id, 1)], wait)
        .await
        .map_err(|missing| {
            arg_err(
                &format!("bus.request('{to}', '{kind}')"),
                format!("no reply within {} ms ({missing})", wait.as_millis()),
            )
        })?;
    message_table(&lua, &replies.remove(0).envelope)
}

/// `bus.replies(id, n [, timeout_ms])` or `bus.replies(ids [, timeout_ms])`:
/// the replies, once all came.
async fn replies(
    lua: Lua,
    c: Arc<AgentContext>,
    (what, a, b): (LuaValue, LuaValue, LuaValue),
) -> mlua::Result<Table> {
    let (wanted, timeout) = wanted_replies(&what, &a, &b)?;
    let wait = timeout.map_or(default_wait(&c), millis);
    let replies = await_replies(&c, &wanted, wait).await.map_err(|missing| {
        arg_err(
            "bus.replies",
            format!(
                "not every reply came within {} ms ({missing})",
                wait.as_millis()
            ),
        )
    })?;
    let out = lua.create_table()?;
    for d in &replies {
        out.push(message_table(&lua, &d.envelope)?)?;
    }
    Ok(out)
}

/// `bus.receive` asking the store without waiting.
async fn try_receive(lua: Lua, c: Arc<AgentContext>, (): ()) -> mlua::Result<MessageFields> {
    receive(&lua, &c, Duration::ZERO).await
}

/// `bus.receive` waiting up to `timeout_ms`.
fn wait_receive(
    lua: Lua,
    c: Arc<AgentContext>,
    timeout_ms: f64,
) -> impl Future<Output = mlua::Result<MessageFields>> {
    let span = crate::trace::host_call("bus.receive");
    async move { receive(&lua, &c, millis(timeout_ms)).instrument(span).await }
}

/// `bus.subscribe([type,] fn)`: `fn(msg)` handles the messages (of `type`).
fn subscribe(
    lua: &Lua,
    c: &AgentContext,
    (a, b): (LuaValue, Option<Function>),
) -> mlua::Result<()> {
    let (kind, f) = match (a, b) {
        (LuaValue::Function(f), None) => (None, f),
        (LuaValue::String(k), Some(f)) => (Some(k.to_str()?.to_string()), f),
        (a, _) => {
            return Err(arg_err(
                "bus.subscribe",
                format!(
                    "expected ([type,] fn): argument #1 must be a message type or a function, got {}",
                    a.type_name()
                ),
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
}

/// The default wait for replies: the `message_timeout` setting.
fn default_wait(c: &AgentContext) -> Duration {
    Duration::from_millis(c.coord.config.message_timeout)
}

/// The id and sender of the message `bus.reply` answers.
fn replied_message(msg: &LuaValue) -> mlua::Result<(String, String)> {
    let LuaValue::Table(t) = msg else {
        return Err(arg_err(
            "bus.reply",
            format!(
                "argument #1 'msg' must be the message being answered (a table with id and from), got {}",
                msg.type_name()
            ),
        ));
    };
    match (t.get::<LuaValue>("id")?, t.get::<LuaValue>("from")?) {
        (LuaValue::String(id), LuaValue::String(from)) => {
            Ok((id.to_str()?.to_string(), from.to_str()?.to_string()))
        }
        _ => Err(arg_err(
            "bus.reply",
            "argument #1 'msg' must be the message being answered: its id and from are missing",
        )),
    }
}

/// The replies `bus.replies` waits for, as `(message id, how many)`, and its timeout:
/// `(id, n [, timeout])` or `(ids [, timeout])`.
#[allow(clippy::type_complexity)]
fn wanted_replies(
    what: &LuaValue,
    a: &LuaValue,
    b: &LuaValue,
) -> mlua::Result<(Vec<(String, usize)>, Option<f64>)> {
    let number = |v: &LuaValue, name: &str, index: usize| -> mlua::Result<Option<f64>> {
        match v {
            LuaValue::Nil => Ok(None),
            LuaValue::Integer(n) => Ok(Some(*n as f64)),
            LuaValue::Number(n) => Ok(Some(*n)),
            other => Err(arg_err(
                "bus.replies",
                format!(
                    "argument #{index} '{name}' must be a number, got {}",
                    other.type_name()
                ),
            )),
        }
    };
    match what {
        LuaValue::String(id) => {
            let n = number(a, "n", 2)?.ok_or_else(|| {
                arg_err(
                    "bus.replies",
                    "argument #2 'n' (how many replies) is missing",
                )
            })?;
            if n < 0.0 || n.fract() != 0.0 {
                return Err(arg_err(
                    "bus.replies",
                    format!("argument #2 'n' must be a whole number of 0 or more, got {n}"),
                ));
            }
            // None wanted (a broadcast that reached no agent): {} at once,
            // as for an empty list of ids.
            let wanted = if n == 0.0 {
                Vec::new()
            } else {
                vec![(id.to_str()?.to_string(), n as usize)]
            };
            Ok((wanted, number(b, "timeout_ms", 3)?))
        }
        LuaValue::Table(ids) => {
            let mut wanted = Vec::new();
            for id in ids.sequence_values::<LuaValue>() {
                match id? {
                    LuaValue::String(id) => wanted.push((id.to_str()?.to_string(), 1)),
                    other => {
                        return Err(arg_err(
                            "bus.replies",
                            format!(
                                "argument #1 'ids' must be a list of message ids, found {}",
                                other.type_name()
                            ),
                        ));
                    }
                }
            }
            Ok((wanted, number(a, "timeout_ms", 2)?))
        }
        other => Err(arg_err(
            "bus.replies",
            format!(
                "argument #1 must be a message id (with n) or a list of ids, got {}",
                other.type_name()
            ),
        )),
    }
}

/// Waits up to `wait` for the replies in `wanted` (`(message id, how many)`),
/// taking only from the agent's own queue and keeping the other messages
/// for later. Returns them in the order of `wanted` (and of arrival for one
/// id), each acknowledged; on timeout, says how many are missing.
async fn await_replies(
    c: &AgentContext,
    wanted: &[(String, usize)],
    wait: Duration,
) -> Result<Vec<Delivery>, String> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut got: Vec<Vec<Delivery>> = wanted.iter().map(|_| Vec::new()).collect();
    let slot_of = |d: &Delivery, got: &[Vec<Delivery>]| {
        let to = d.envelope.reply_to.as_deref()?;
        wanted
            .iter()
            .enumerate()
            .position(|(i, (id, n))| id == to && got[i].len() < *n)
    };
    // Replies taken earlier (by another wait) come first.
    {
        let mut local = c.local.lock();
        let mut kept = std::collections::VecDeque::new();
        while let Some(d) = local.stash.pop_front() {
            match slot_of(&d, &got) {
                Some(i) => got[i].push(d),
                None => kept.push_back(d),
            }
        }
        local.stash = kept;
    }
    let own = &c.queues[..1];
    loop {
        let missing: usize = wanted.iter().zip(&got).map(|((_, n), g)| n - g.len()).sum();
        if missing == 0 {
            break;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let taken = c
            .coord
            .bus
            .take(own, &c.id, left)
            .await
            .map_err(|e| e.to_string())?;
        let Some(d) = taken else {
            let total: usize = wanted.iter().map(|(_, n)| n).sum();
            return Err(format!("{missing} of {total} missing"));
        };
        match slot_of(&d, &got) {
            Some(i) => {
                c.counters.messages_received.fetch_add(1, Ordering::Relaxed);
                got[i].push(d);
            }
            // Counted when it is handed out.
            None => c.local.lock().stash.push_back(d),
        }
    }
    let replies: Vec<Delivery> = got.into_iter().flatten().collect();
    for d in &replies {
        c.coord.bus.ack(d).await.map_err(|e| e.to_string())?;
    }
    Ok(replies)
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
        .into_lua_err()?;
    c.counters.messages_sent.fetch_add(1, Ordering::Relaxed);
    Ok(id)
}

/// A message's fields in [`PACK`]'s argument order: id, from, to, type,
/// payload, attempts, reply_to (all nil for no message). A tuple, not a
/// `MultiValue`, so returning it allocates nothing on the Rust side.
type MessageFields = (
    LuaValue,
    LuaValue,
    LuaValue,
    LuaValue,
    LuaValue,
    LuaValue,
    LuaValue,
);

/// Acknowledges what the agent held, then takes the next message.
async fn receive(lua: &Lua, c: &AgentContext, wait: Duration) -> mlua::Result<MessageFields> {
    // The list goes back afterwards, so its buffer serves every receive.
    let mut held = std::mem::take(&mut c.local.lock().held);
    for d in held.drain(..) {
        c.coord.bus.ack(&d).await.into_lua_err()?;
    }
    let stashed = c.local.lock().stash.pop_front();
    let taken = match stashed {
        Some(d) => Some(d),
        None => c
            .coord
            .bus
            .take(&c.queues, &c.id, wait)
            .await
            .into_lua_err()?,
    };
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

/// [`receive`] without waiting, when nothing needs the store: the agent has
/// no write to settle and a message was kept for it (set aside while it
/// waited for replies) or read ahead. No message (all nil) otherwise, and
/// the caller asks the store.
fn receive_now(lua: &Lua, c: &Arc<AgentContext>, timeout: LuaValue) -> mlua::Result<MessageFields> {
    if !matches!(
        timeout,
        LuaValue::Nil | LuaValue::Integer(_) | LuaValue::Number(_)
    ) {
        return Err(arg_err(
            "bus.receive",
            format!(
                "argument #1 'timeout_ms' must be a number of milliseconds, got {}",
                timeout.type_name()
            ),
        ));
    }
    let mut local = c.local.lock();
    if !local.writes.is_empty() {
        return Ok(Default::default());
    }
    let kept = local.stash.pop_front();
    let Some(delivery) = kept.or_else(|| c.coord.bus.take_ready(&c.queues, &c.id)) else {
        return Ok(Default::default());
    };
    // Taking a message observes the store (see `OwnWrites`).
    local.own_writes.forget();
    let mut held = std::mem::take(&mut local.held);
    for d in held.drain(..) {
        local.writes.push(c.coord.bus.ack_nowait(&d));
    }
    let fields = message_fields(lua, &delivery.envelope);
    c.counters.messages_received.fetch_add(1, Ordering::Relaxed);
    held.push(delivery);
    local.held = held;
    fields
}

fn message_fields(lua: &Lua, e: &Envelope) -> mlua::Result<MessageFields> {
    let (from, to, kind) = interned3(lua, [&e.from, &e.to, &e.kind])?;
    Ok((
        LuaValue::String(lua.create_string(&*e.id)?),
        from,
        to,
        kind,
        to_lua(lua, &e.payload)?,
        LuaValue::Integer(e.attempts.into()),
        match &e.reply_to {
            Some(id) => LuaValue::String(lua.create_string(id)?),
            None => LuaValue::Nil,
        },
    ))
}

/// The Lua form of a message: `{id, from, to, type, payload, attempts}`.
pub fn message_table(lua: &Lua, e: &Envelope) -> mlua::Result<Table> {
    let pack: Function = lua.named_registry_value(MESSAGE)?;
    pack.call(message_fields(lua, e)?)
}

/// Settles what an agent's callback left: its writes sent without waiting
/// (a failed one is the error, and fails the callback), and the messages it
/// took with `receive`, acknowledged when the callback returned, given back
/// when it failed with `failure`.
pub async fn settle_held(c: &AgentContext, failure: Option<&Error>) -> crate::error::Result<()> {
    let written = settle_writes(c).await;
    let failure = failure.or(written.as_ref().err());
    let held: Vec<Delivery> = std::mem::take(&mut c.local.lock().held);
    for d in &held {
        match failure {
            None => c.coord.bus.ack(d).await?,
            Some(e) => {
                c.coord.bus.nack(d, &c.id, e).await?;
            }
        }
    }
    written.map(|_| ())
}
