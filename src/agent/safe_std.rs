//! Replacements for the standard functions that could stall or escape the
//! host in their stock form. Each replaces the entry in the stock table
//! itself, so every path to the function (`string.rep`, `("x"):rep`,
//! `package.loaded.string.rep`) leads to the replacement.
//!
//! - `string.find`, `match`, `gmatch`, `gsub`: see [`super::safe_string`].
//! - `table.insert`, `remove`, `move`: see [`super::safe_table`].
//! - `string.rep` of an empty string with an empty separator returns at once
//!   (the stock one loops `n` times copying nothing); otherwise each of its
//!   `n` steps writes at least a byte, so the heap limit bounds it.
//! - `setmetatable` refuses metatables with `__gc`: Lua runs finalizers with
//!   hooks off, so a looping finalizer could never be interrupted.
//! - `pcall`, `coroutine.resume` and `coroutine.close` hand a Rust panic on
//!   instead of returning it as an error value (mlua's own non-yielding
//!   `pcall` would forbid async host calls inside it).
//! - `coroutine.resume` and the functions `coroutine.wrap` returns refuse to
//!   run anything once the callback's budget is spent: a coroutine created
//!   then would start with a fresh hook count, and coroutines creating
//!   coroutines could multiply the work done before each notices.
//! - `coroutine.resume` and the functions `coroutine.wrap` returns wait with
//!   a coroutine that waits in an async host call (`sleep` inside
//!   `coroutine.wrap`), instead of handing the script mlua's "pending"
//!   marker (see [`COROUTINES`]).
//! - `xpcall` calls its message handler after unwinding, like `pcall` and then
//!   the handler: Lua would run it inside the hook's error, with hooks off.
//! - `collectgarbage` offers only `collect`, `count`, `step` and `isrunning`.
//! - `print` writes one line to the host's log, never to its stdout.

use mlua::{Function, Lua, MultiValue, Table, Value};

use super::budget::Budget;
use crate::lua_api::chunks;
use crate::lua_api::log::{self, Level};

/// The host chunks of this file, loaded with the others (see [`chunks::HostChunks`]).
pub(super) const CHUNKS: &[(&str, &str)] = &[("coroutine", COROUTINES), ("xpcall", XPCALL)];

/// `collectgarbage` options an agent may use.
const GC_OPTIONS: &[&str] = &["collect", "count", "step", "isrunning"];

/// Installs every replacement in `lua`. `memory_limit` bounds the strings
/// `gsub` builds outside the Lua heap.
pub fn install(lua: &Lua, memory_limit: usize) -> mlua::Result<()> {
    let globals = lua.globals();
    super::safe_string::install(lua, memory_limit)?;
    super::safe_table::install(lua)?;
    install_rep(lua)?;
    install_coroutines(lua)?;

    let stock: Function = globals.get("setmetatable")?;
    globals.set(
        "setmetatable",
        lua.create_function(move |_, (t, mt): (Value, Value)| {
            if let Value::Table(mt) = &mt
                && !mt.raw_get::<Value>("__gc")?.is_nil()
            {
                return Err(mlua::Error::runtime(
                    "setmetatable: __gc metamethods are not available to agents \
                     (the host cannot interrupt a finalizer)",
                ));
            }
            stock.call::<MultiValue>((t, mt))
        })?,
    )?;

    let xpcall: Function = chunks::host(lua, "xpcall", XPCALL)?.call(())?;
    globals.set("xpcall", xpcall)?;

    let stock: Function = globals.get("collectgarbage")?;
    globals.set(
        "collectgarbage",
        lua.create_function(move |_, args: MultiValue| {
            let option = match args.front() {
                None | Some(Value::Nil) => "collect".to_string(),
                Some(Value::String(s)) => s.to_str()?.to_string(),
                Some(other) => other.type_name().to_string(),
            };
            if !GC_OPTIONS.contains(&option.as_str()) {
                return Err(mlua::Error::runtime(format!(
                    "collectgarbage: option '{option}' is not available to agents (only {})",
                    GC_OPTIONS.join(", ")
                )));
            }
            stock.call::<MultiValue>(args)
        })?,
    )?;

    globals.set(
        "print",
        lua.create_function(|lua, args: MultiValue| {
            let agent = Budget::of(lua).map(|b| b.agent()).unwrap_or_default();
            log::emit(Level::Info, &agent, &log::join(lua, args, "\t")?);
            Ok(())
        })?,
    )
}

/// `string.rep` that returns at once when it would only loop.
fn install_rep(lua: &Lua) -> mlua::Result<()> {
    let string: Table = lua.globals().get("string")?;
    let rep: Function = string.get("rep")?;
    string.raw_set(
        "rep",
        lua.create_function(move |lua, (s, n, sep): (Value, Value, Value)| {
            // The stock function reads `s` and `sep` with luaL_checklstring:
            // a string, or a number (never empty); nothing else.
            let empty = |v: &Value| match v {
                Value::String(s) => s.as_bytes().is_empty(),
                Value::Nil => true,
                _ => false,
            };
            if empty(&s) && empty(&sep) && lua.coerce_integer(n.clone())?.is_some() {
                return Ok(MultiValue::from_iter([Value::String(
                    lua.create_string("")?,
                )]));
            }
            rep.call::<MultiValue>((s, n, sep))
        })?,
    )
}

/// `pcall`, `coroutine.resume`, `coroutine.wrap` and `coroutine.close` over
/// the stock ones: panics surface, nothing resumes once the budget is spent,
/// and a coroutine waiting in a host call makes its resumer wait with it.
fn install_coroutines(lua: &Lua) -> mlua::Result<()> {
    let globals = lua.globals();
    let coroutine: Table = globals.get("coroutine")?;
    // `surface` reads every value in Rust, where mlua resumes a caught panic.
    let surface = lua.create_function(|_, values: MultiValue| Ok(values))?;
    let spent = lua.create_function(|lua, ()| match Budget::of(lua) {
        Some(budget) => budget.check().map_err(mlua::Error::external),
        None => Ok(()),
    })?;
    let (pcall, resume, wrap, close): (Function, Function, Function, Function) =
        chunks::host(lua, "coroutine", COROUTINES)?.call((
            globals.get::<Function>("pcall")?,
            coroutine.get::<Function>("create")?,
            coroutine.get::<Function>("resume")?,
            coroutine.get::<Function>("status")?,
            coroutine.get::<Function>("close")?,
            coroutine.get::<Function>("yield")?,
            Value::LightUserData(Lua::poll_pending()),
            surface,
            spent,
        ))?;
    globals.set("pcall", pcall)?;
    coroutine.raw_set("resume", resume)?;
    coroutine.raw_set("wrap", wrap)?;
    coroutine.raw_set("close", close)
}

/// `pcall`, `coroutine.resume`, `coroutine.wrap` and `coroutine.close`.
/// `wrap` behaves as Lua 5.4's: on an error it closes the coroutine and
/// raises the error, with the caller's position in front of a string.
///
/// An async host function (`sleep`, `bus.receive`, a store call on Redis)
/// waits by yielding mlua's "pending" marker up to the thread the host
/// polls, and expects to be resumed when its future can make progress.
/// Inside a script's own coroutine that yield ends at the script's
/// `resume`, which would hand the marker (a host address) to the script as
/// if the coroutine had yielded it, and leave the call suspended for ever.
/// So `waited` passes the marker on: the resumer yields it in turn (up to
/// the host, through any number of nested coroutines), and when the host
/// resumes it, it resumes the coroutine, until that yields something else,
/// returns or fails. Only the host's functions yield the marker: no path
/// hands it to a script.
const COROUTINES: &str = r##"
local pcall, create, resume, status, close, yield, pending, surface, spent = ...
local type, error, select = type, error, select
local function waited(co, ok, ...)
  if ok and select("#", ...) == 1 and (...) == pending then
    return waited(co, surface(resume(co, yield(pending))))
  end
  return ok, ...
end
local function wrapped(co, ok, ...)
  if ok then return ... end
  local err = ...
  if status(co) == "dead" then
    local closed, closing_err = close(co)
    if not closed then err = closing_err end
  end
  error(err, type(err) == "string" and 2 or 0)
end
return function(f, ...) return surface(pcall(f, ...)) end,
  function(co, ...)
    spent()
    return waited(co, surface(resume(co, ...)))
  end,
  function(f)
    local co = create(f)
    return function(...)
      spent()
      return wrapped(co, waited(co, surface(resume(co, ...))))
    end
  end,
  function(co) return surface(close(co)) end
"##;

/// `xpcall(f, msgh, ...)` over `pcall`, with the handler run after unwinding.
const XPCALL: &str = r#"
local pcall, type, error, pack, unpack = pcall, type, error, table.pack, table.unpack
return function(f, msgh, ...)
  if type(msgh) ~= "function" then
    error("bad argument #2 to 'xpcall' (function expected, got " .. type(msgh) .. ")", 2)
  end
  local r = pack(pcall(f, ...))
  if r[1] then return unpack(r, 1, r.n) end
  local _, handled = pcall(msgh, r[2])
  return false, handled
end
"#;
