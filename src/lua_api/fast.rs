//! `bus.send` and `bus.receive` of a message the process can hand over at
//! once, `blackboard.set` sent without waiting and `blackboard.get` of the
//! agent's own write, as plain C functions on the Lua stack.
//!
//! Through mlua a message paid for its conversions more than for its
//! delivery: the argument strings, a protected call for every string made
//! in Rust (the message id on both sides: once a VM has a heap limit, mlua
//! wraps each allocation it makes from Rust in `lua_pcall`), each value
//! moved through mlua's reference thread, and the message table built from
//! seven returned values by a Lua function. Here the strings are pushed
//! with `lua_pushlstring` and the table is built in place, from the
//! envelope the store handed out. The same held for a blackboard value:
//! converted by mlua's serde, a small table read back cost a protected
//! call per string and per table; written, a walk of the table through
//! mlua twice (see `stack_json`).
//!
//! These functions take the fast path only: anything else — a script's
//! top level running (see `top_level`), a value that
//! does not convert plainly (see `stack_json`), a value JSON cannot hold,
//! a name, key or size refused, a write
//! to settle first, a recipient not known here, a bad timeout — returns
//! `nil`, and the Lua wrapper goes on to the mlua functions, which do it
//! or raise the error with its kind and the argument named.
//!
//! Safety. A Lua error (out of heap memory, the only one the API calls here
//! can raise) unwinds with `longjmp`, which must not cross a Rust frame
//! that owns something to drop. So each function does its Rust work in a
//! function of its own that has returned before Lua is called, leaving the
//! strings it pushes where the agent's context keeps them (the message in
//! `held`, the id in `sent_id`) and only raw pointers to them on the C
//! side. Panics are caught before they reach Lua: the slow path then runs
//! and reports them as mlua does.

use std::os::raw::{c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use mlua::{Function, Lua, LuaSerdeExt, ffi};
use serde_json::Value;

use super::AgentContext;
use super::stack_json::{bytes_at, string_at, value_at};
use crate::store::Envelope;

/// `send_fast(to, type, payload)`: the message id, or nil (see the module).
pub(super) fn send(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Function> {
    closure(lua, ctx, send_c)
}

/// `receive_fast(timeout)`: the message table; false when no message is
/// ready here; nil when the timeout is not a number (see the module).
pub(super) fn receive(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Function> {
    closure(lua, ctx, receive_c)
}

/// `set_fast(key, value)`: true when the set was sent without waiting;
/// nil for the slow path (`blackboard.set`'s wrapper: a delete, a value
/// that does not convert plainly, a write to settle first, a bad key or
/// size, the quota ledger to look at the store).
pub(super) fn set(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Function> {
    closure(lua, ctx, set_c)
}

/// `cached(key)`: the value the agent wrote under `key` since it last
/// observed the store, once its writes are acknowledged (a read sees them
/// so); nil otherwise, and `blackboard.get` asks the store.
pub(super) fn cached(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Function> {
    closure(lua, ctx, cached_c)
}

/// The agent's context, kept alive as long as the VM whose C closures
/// point at it.
struct Kept(#[allow(dead_code)] Arc<AgentContext>);

/// The message table's keys, upvalues 3 and on of each closure: set with
/// `lua_rawset`, where `lua_setfield` looks each name up by its C string.
const KEYS: [&std::ffi::CStr; 7] = [
    c"id",
    c"from",
    c"to",
    c"type",
    c"payload",
    c"attempts",
    c"reply_to",
];
const ID: c_int = 3;
const FROM: c_int = 4;
const TO: c_int = 5;
const TYPE: c_int = 6;
const PAYLOAD: c_int = 7;
const ATTEMPTS: c_int = 8;
const REPLY_TO: c_int = 9;

/// Upvalues after the keys: the strings `receive` last pushed as `from`,
/// `to` and `type` (the empty string at first). A receiver gets the same
/// names message after message; pushing the kept string again saves Lua
/// hashing the bytes and looking the string up (see [`push_name`]).
const LAST_FROM: c_int = 10;
const LAST_TO: c_int = 11;
const LAST_TYPE: c_int = 12;
const LAST_NAMES: c_int = 3;

/// A C closure over `f` with the upvalues: the agent's context (a light
/// userdata), the array metatable of mlua's serde conversions, [`KEYS`]
/// and the last names (see [`LAST_FROM`]).
fn closure(lua: &Lua, ctx: &Arc<AgentContext>, f: ffi::lua_CFunction) -> mlua::Result<Function> {
    if lua.app_data_ref::<Kept>().is_none() {
        lua.set_app_data(Kept(ctx.clone()));
    }
    let context = Arc::as_ptr(ctx) as *mut std::ffi::c_void;
    let arrays = lua.array_metatable();
    // SAFETY: pushes two values and a closure over them; the stack holds
    // the table argument `exec_raw` pushed, which the closure consumes.
    unsafe {
        lua.exec_raw::<Function>(arrays, |state| {
            ffi::lua_pushlightuserdata(state, context);
            ffi::lua_insert(state, -2);
            for key in KEYS {
                ffi::lua_pushstring(state, key.as_ptr());
            }
            for _ in 0..LAST_NAMES {
                ffi::lua_pushstring(state, c"".as_ptr());
            }
            ffi::lua_pushcclosure(state, f, 2 + KEYS.len() as c_int + LAST_NAMES);
        })
    }
}

/// The context of the running closure.
///
/// # Safety
/// Only inside a closure made by [`closure`].
unsafe fn context<'a>(state: *mut ffi::lua_State) -> &'a AgentContext {
    unsafe { &*(ffi::lua_touserdata(state, ffi::lua_upvalueindex(1)) as *const AgentContext) }
}

unsafe extern "C-unwind" fn send_c(state: *mut ffi::lua_State) -> c_int {
    // SAFETY: reads the arguments and upvalues of this closure; Rust work
    // is done (and its values dropped) before `lua_pushlstring`.
    unsafe {
        let c = context(state);
        if c.top_level.active() {
            return 0;
        }
        let limit = c.coord.config.max_value_bytes;
        let payload = value_at(state, 3, ffi::lua_upvalueindex(2), limit);
        let (Some(to), Some(kind), Some(payload)) =
            (bytes_at(state, 1), bytes_at(state, 2), payload)
        else {
            return 0;
        };
        let sent = catch_unwind(AssertUnwindSafe(|| send_now(c, to, kind, payload)));
        let Ok(Some((id, len))) = sent else {
            return 0;
        };
        ffi::lua_pushlstring(state, id as *const c_char, len);
        1
    }
}

/// Sends without waiting, as `bus::send_now`; the id, kept in the
/// context's `sent_id`, as a pointer and a length. None for the slow path.
fn send_now(
    c: &AgentContext,
    to: &[u8],
    kind: &[u8],
    payload: Value,
) -> Option<(*const u8, usize)> {
    let (from, to, kind) = {
        let epoch = c.coord.store.epoch();
        let mut local = c.local.lock();
        if local.writes.must_settle_before_write(epoch) {
            return None;
        }
        let names = &mut local.sent_names;
        (
            shared(&mut names.from, c.id.as_bytes())?,
            shared(&mut names.to, to)?,
            shared(&mut names.kind, kind)?,
        )
    };
    let sent = c.coord.bus.send_now(from, to, kind, payload);
    let Ok(Some((id, pending))) = sent else {
        return None;
    };
    let pending = super::bus::counted(c, pending);
    let mut local = c.local.lock();
    local.writes.push(pending);
    let sent = (id.as_ptr(), id.len());
    local.sent_id = Some(id);
    Some(sent)
}

/// The names `bus.send`'s fast path sent with last, shared with the
/// envelopes it made: a sender sending to the same recipient with the same
/// type again allocates none of them.
#[derive(Default)]
pub struct SentNames {
    from: Option<Arc<str>>,
    to: Option<Arc<str>>,
    kind: Option<Arc<str>>,
}

/// `name` shared: the one in `last` when it has the same bytes (already
/// known to be UTF-8), else a new one kept there; None when it is not UTF-8.
fn shared(last: &mut Option<Arc<str>>, name: &[u8]) -> Option<Arc<str>> {
    match last {
        Some(kept) if kept.as_bytes() == name => Some(kept.clone()),
        _ => Some(last.insert(std::str::from_utf8(name).ok()?.into()).clone()),
    }
}

unsafe extern "C-unwind" fn receive_c(state: *mut ffi::lua_State) -> c_int {
    // SAFETY: as `send_c`; the envelope is kept alive by the agent's
    // `held` list until its next receive or the end of the callback, and
    // neither can come while this function runs.
    unsafe {
        match ffi::lua_type(state, 1) {
            ffi::LUA_TNONE | ffi::LUA_TNIL | ffi::LUA_TNUMBER => {}
            _ => return 0,
        }
        let c = context(state);
        if c.top_level.active() {
            return 0;
        }
        let taken = catch_unwind(AssertUnwindSafe(|| take_now(c)));
        let envelope = match taken {
            Ok(Some(e)) => &*e,
            Ok(None) => {
                ffi::lua_pushboolean(state, 0);
                return 1;
            }
            Err(_) => return 0,
        };
        ffi::lua_createtable(state, 0, KEYS.len() as c_int);
        key(state, ID);
        push_str(state, &envelope.id);
        ffi::lua_rawset(state, -3);
        key(state, FROM);
        push_name(state, LAST_FROM, &envelope.from);
        ffi::lua_rawset(state, -3);
        key(state, TO);
        push_name(state, LAST_TO, &envelope.to);
        ffi::lua_rawset(state, -3);
        key(state, TYPE);
        push_name(state, LAST_TYPE, &envelope.kind);
        ffi::lua_rawset(state, -3);
        if !envelope.payload.is_null() {
            key(state, PAYLOAD);
            push_json(state, &envelope.payload, 0);
            ffi::lua_rawset(state, -3);
        }
        key(state, ATTEMPTS);
        ffi::lua_pushinteger(state, envelope.attempts.into());
        ffi::lua_rawset(state, -3);
        if let Some(reply_to) = &envelope.reply_to {
            key(state, REPLY_TO);
            push_str(state, reply_to);
            ffi::lua_rawset(state, -3);
        }
        1
    }
}

unsafe extern "C-unwind" fn set_c(state: *mut ffi::lua_State) -> c_int {
    // SAFETY: as `send_c`; nothing is pushed before the Rust work is done.
    unsafe {
        let c = context(state);
        if ffi::lua_type(state, 2) <= ffi::LUA_TNIL || c.top_level.active() {
            return 0;
        }
        let limit = c.coord.config.max_value_bytes;
        let (Some(key), Some(value)) = (
            string_at(state, 1),
            value_at(state, 2, ffi::lua_upvalueindex(2), limit),
        ) else {
            return 0;
        };
        let sent = catch_unwind(AssertUnwindSafe(|| {
            !super::must_settle(c)
                && matches!(
                    super::blackboard::send_set(c, key.to_owned(), value),
                    Ok(true)
                )
        }));
        if !matches!(sent, Ok(true)) {
            // Nothing was sent: the slow path does it or raises the error.
            return 0;
        }
        ffi::lua_pushboolean(state, 1);
        1
    }
}

unsafe extern "C-unwind" fn cached_c(state: *mut ffi::lua_State) -> c_int {
    // SAFETY: as `receive_c`; the value stays in the agent's own writes,
    // which only the agent's own calls change, and none can come while this
    // function runs (no finalizer either: `setmetatable` refuses `__gc`).
    unsafe {
        let Some(key) = string_at(state, 1) else {
            return 0;
        };
        let c = context(state);
        if c.top_level.active() {
            return 0;
        }
        let Ok(Some(value)) = catch_unwind(AssertUnwindSafe(|| own_value(c, key))) else {
            return 0;
        };
        push_json(state, &*value, 0);
        1
    }
}

/// The value the agent wrote under `key`, when its writes are
/// acknowledged; none for a null (read as nil, as the store's).
fn own_value(c: &AgentContext, key: &str) -> Option<*const Value> {
    let local = c.local.lock();
    if !local.writes.is_empty() {
        return None;
    }
    let value = local.own_writes.get(key).filter(|v| !v.is_null())?;
    Some(value as *const Value)
}

/// Takes a message ready here, as `bus::receive_now`: the message, held
/// by the agent (its earlier ones acknowledged). None when there is none,
/// or a write must be settled first.
fn take_now(c: &AgentContext) -> Option<*const Envelope> {
    let mut local = c.local.lock();
    if !local.writes.is_empty() {
        return None;
    }
    let kept = local.stash.pop_front();
    let delivery = kept.or_else(|| c.coord.bus.take_ready(&c.queues, &c.id))?;
    // Taking a message observes the store (see `OwnWrites`).
    local.own_writes.forget();
    let mut held = std::mem::take(&mut local.held);
    for d in held.drain(..) {
        local.writes.push(c.coord.bus.ack_nowait(&d));
    }
    c.counters.messages_received.fetch_add(1, Ordering::Relaxed);
    let envelope = Arc::as_ptr(&delivery.envelope);
    held.push(delivery);
    local.held = held;
    Some(envelope)
}

/// Pushes the key string kept in upvalue `n`.
unsafe fn key(state: *mut ffi::lua_State, n: c_int) {
    unsafe {
        ffi::lua_pushvalue(state, ffi::lua_upvalueindex(n));
    }
}

/// Pushes `name`: the string kept in upvalue `n` when it has the same
/// bytes, else a new one, then kept there.
unsafe fn push_name(state: *mut ffi::lua_State, n: c_int, name: &str) {
    unsafe {
        let mut len = 0usize;
        let kept = ffi::lua_tolstring(state, ffi::lua_upvalueindex(n), &mut len);
        if std::slice::from_raw_parts(kept as *const u8, len) == name.as_bytes() {
            ffi::lua_pushvalue(state, ffi::lua_upvalueindex(n));
        } else {
            push_str(state, name);
            ffi::lua_pushvalue(state, -1);
            ffi::lua_replace(state, ffi::lua_upvalueindex(n));
        }
    }
}

unsafe fn push_str(state: *mut ffi::lua_State, s: &str) {
    unsafe {
        ffi::lua_pushlstring(state, s.as_ptr() as *const c_char, s.len());
    }
}

/// Deepest nesting converted (as mlua's serde conversion).
const MAX_DEPTH: usize = 128;

/// Pushes `value` as `convert::to_lua` makes it (mlua's serde conversion):
/// arrays with mlua's array metatable (upvalue 2), null inside them as
/// `json.null`, integers that fit as integers.
unsafe fn push_json(state: *mut ffi::lua_State, value: &Value, depth: usize) {
    unsafe {
        ffi::luaL_checkstack(state, 4, c"message payload nested too deeply".as_ptr());
        match value {
            Value::Null => ffi::lua_pushlightuserdata(state, std::ptr::null_mut()),
            Value::Bool(b) => ffi::lua_pushboolean(state, *b as c_int),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => ffi::lua_pushinteger(state, i),
                (None, Some(f)) => ffi::lua_pushnumber(state, f),
                (None, None) => ffi::lua_pushnil(state),
            },
            Value::String(s) => push_str(state, s),
            Value::Array(items) => {
                if depth >= MAX_DEPTH {
                    too_deep(state);
                }
                ffi::lua_createtable(state, items.len().min(c_int::MAX as usize) as c_int, 0);
                for (i, item) in items.iter().enumerate() {
                    push_json(state, item, depth + 1);
                    ffi::lua_rawseti(state, -2, i as ffi::lua_Integer + 1);
                }
                ffi::lua_pushvalue(state, ffi::lua_upvalueindex(2));
                ffi::lua_setmetatable(state, -2);
            }
            Value::Object(map) => {
                if depth >= MAX_DEPTH {
                    too_deep(state);
                }
                ffi::lua_createtable(state, 0, map.len().min(c_int::MAX as usize) as c_int);
                for (k, v) in map {
                    push_str(state, k);
                    push_json(state, v, depth + 1);
                    ffi::lua_rawset(state, -3);
                }
            }
        }
    }
}

unsafe fn too_deep(state: *mut ffi::lua_State) -> ! {
    unsafe {
        ffi::lua_pushstring(
            state,
            c"bus.receive: message payload nested too deeply".as_ptr(),
        );
        ffi::lua_error(state)
    }
}
