//! Replacements for the standard functions that could stall or escape the
//! host in their stock form.
//!
//! - `string.find`, `match`, `gmatch`, `gsub`: see [`super::safe_string`].
//! - `string.rep` of an empty string returns at once (the stock one loops `n` times).
//! - `table.insert`, `table.remove` and `table.move` refuse to shift more than
//!   [`MAX_SHIFT`] elements (a `__len` of 1e15 would keep them in C for days).
//! - `setmetatable` refuses metatables with `__gc`: Lua runs finalizers with
//!   hooks off, so a looping finalizer could never be interrupted.
//! - `pcall`, `coroutine.resume` and `coroutine.close` hand a Rust panic on
//!   instead of returning it as an error value (mlua's own non-yielding
//!   `pcall` would forbid async host calls inside it).
//! - `xpcall` calls its message handler after unwinding, like `pcall` and then
//!   the handler: Lua would run it inside the hook's error, with hooks off.
//! - `collectgarbage` offers only `collect`, `count`, `step` and `isrunning`.
//! - `print` writes to the host's log, never to its stdout.

use mlua::{Function, Lua, MultiValue, Table, Value};

use super::budget::Budget;

/// Most elements `table.insert`, `table.remove` and `table.move` shift in one call.
pub const MAX_SHIFT: i64 = 1 << 24;

/// `collectgarbage` options an agent may use.
const GC_OPTIONS: &[&str] = &["collect", "count", "step", "isrunning"];

/// Installs every replacement in `lua`'s globals. `memory_limit` bounds the
/// strings `gsub` builds outside the Lua heap.
pub fn install(lua: &Lua, memory_limit: usize) -> mlua::Result<()> {
    let globals = lua.globals();
    super::safe_string::install(lua, memory_limit)?;
    let string: Table = globals.get("string")?;
    let rep: Function = string.get("rep")?;
    string.set(
        "rep",
        lua.create_function(move |lua, (s, n, sep): (Value, Value, Value)| {
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
    )?;

    let table: Table = globals.get("table")?;
    for name in ["insert", "remove", "move"] {
        let stock: Function = table.get(name)?;
        table.set(
            name,
            lua.create_function(move |_, args: MultiValue| {
                check_shift(name, &args)?;
                stock.call::<MultiValue>(args)
            })?,
        )?;
    }

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

    // `surface` reads every value in Rust, where mlua resumes a caught panic.
    let surface = lua.create_function(|_, values: MultiValue| Ok(values))?;
    let coroutine: Table = globals.get("coroutine")?;
    let (pcall, resume, close): (Function, Function, Function) =
        lua.load(SURFACE_PANICS).set_name("=pcall").call((
            globals.get::<Function>("pcall")?,
            coroutine.get::<Function>("resume")?,
            coroutine.get::<Function>("close")?,
            surface,
        ))?;
    globals.set("pcall", pcall)?;
    coroutine.set("resume", resume)?;
    coroutine.set("close", close)?;
    let xpcall: Function = lua.load(XPCALL).set_name("=xpcall").call(())?;
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
            let mut line = Vec::new();
            for v in args {
                let text = match lua.coerce_string(v.clone())? {
                    Some(s) => s.to_string_lossy(),
                    None => v.to_string()?,
                };
                line.push(text);
            }
            let agent = Budget::of(lua).map(|b| b.agent()).unwrap_or_default();
            tracing::info!(target: "orrery::script", agent = %agent, "{}", line.join("\t"));
            Ok(())
        })?,
    )
}

/// `pcall`, `coroutine.resume` and `coroutine.close` whose results pass through `surface`.
const SURFACE_PANICS: &str = r#"
local pcall, resume, close, surface = ...
return function(f, ...) return surface(pcall(f, ...)) end,
  function(co, ...) return surface(resume(co, ...)) end,
  function(co) return surface(close(co)) end
"#;

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

/// Refuses calls that would move more than [`MAX_SHIFT`] elements.
fn check_shift(name: &str, args: &MultiValue) -> mlua::Result<()> {
    let int = |i: usize| match args.get(i) {
        Some(Value::Integer(n)) => Some(*n),
        Some(Value::Number(n)) if n.fract() == 0.0 => Some(*n as i64),
        _ => None,
    };
    let shifted = match name {
        "move" => match (int(1), int(2)) {
            (Some(f), Some(e)) => e.saturating_sub(f).saturating_add(1),
            _ => 0,
        },
        // insert(t, pos, v) and remove(t, pos) shift from pos to #t.
        _ if (name == "insert" && args.len() == 3) || (name == "remove" && args.len() >= 2) => {
            let Some(Value::Table(t)) = args.front() else {
                return Ok(());
            };
            let len = t.len()?;
            int(1).map_or(0, |pos| len.saturating_sub(pos).abs())
        }
        _ => 0,
    };
    if shifted > MAX_SHIFT {
        return Err(mlua::Error::runtime(format!(
            "table.{name}: would move {shifted} elements (at most {MAX_SHIFT} in one call)"
        )));
    }
    Ok(())
}
