//! Builds an agent's Lua VM: safe standard libraries only, text-only `load`,
//! `require` confined to the script registry (and recording what it loads, for
//! hot reload), the host API, a heap limit and a time budget.
//!
//! [`agent_vm`] is the one way such a VM is made: agents and the reload check
//! both use it, so a check runs under exactly the limits an agent does.
//!
//! What a VM has: the base functions (less `dofile`, `loadfile`, `warn`),
//! `coroutine`, `table`, `string` (less `string.dump`), `utf8`, `math` and the
//! clock part of `os` (`time`, `clock`, `date`, `difftime`). Not `io`,
//! `debug`, `package.loadlib`, C modules, `os.execute`/`exit`/`remove`/
//! `getenv`, nor bytecode. Unsafe entries are removed from the stock tables
//! themselves, and `package.loaded` (the registry's `_LOADED`, which `require`
//! reads) holds exactly the tables the globals show, so no second path leads
//! to a stock library. The functions that could stall the host are replaced
//! (see [`super::safe_std`]). A Rust panic is never swallowed by the script's
//! `pcall` or `coroutine.resume`: it reaches the agent's runner, which fails
//! the agent.

use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::time::Duration;

use mlua::{Function, Lua, LuaOptions, StdLib, Table, Value};

use super::budget::Budget;
use super::modules::{self, Loader, ModuleGraph};
use crate::lua_api::chunks::HostChunks;
use crate::lua_api::{self, AgentContext};
use crate::scripts::{Script, ScriptRegistry};

/// `os` functions that only read the clock.
const SAFE_OS: &[&str] = &["time", "clock", "date", "difftime"];

/// Globals removed from every VM: they reach the file system, load bytecode,
/// or (`warn`) write to a place scripts have no business writing to.
const REMOVED_GLOBALS: &[&str] = &["dofile", "loadfile", "warn"];

/// The standard libraries left in `package.loaded` (besides the host API's
/// tables): each the very table its global names.
const LIBRARIES: &[&str] = &["_G", "coroutine", "table", "string", "utf8", "math", "os"];

/// The host's chunks every VM runs, loaded as one (see [`HostChunks`]).
static HOST_CHUNKS: HostChunks = HostChunks::new(&[
    super::safe_std::CHUNKS,
    super::safe_table::CHUNKS,
    lua_api::HOST_CHUNKS,
]);

/// An agent's VM, used as the [`Lua`] it derefs to.
///
/// mlua's `Lua` runs a full collection when the one made by `Lua::new_with`
/// is dropped (a clone does not), a twentieth of what a spawn costs, just
/// before `lua_close` frees everything anyway. Its point: garbage holding a
/// clone of the `Lua` (a coroutine abandoned in an async host call keeps
/// the call's future, which holds one) would keep the state alive for
/// ever. So the VM keeps a clone (the original is dropped while its heap is
/// near empty), and on drop collects only when something still holds the
/// state once its clone is gone: then as mlua would, so that garbage lets
/// go of the state and the last holder closes it.
pub struct Vm(ManuallyDrop<Lua>);

impl std::ops::Deref for Vm {
    type Target = Lua;

    fn deref(&self) -> &Lua {
        &self.0
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let weak = self.0.weak();
        // SAFETY: the field is taken once, here, and never used again.
        drop(unsafe { ManuallyDrop::take(&mut self.0) });
        if let Some(held) = weak.try_upgrade() {
            let _ = held.gc_collect();
        }
    }
}

/// A VM for the agent `ctx`: the sandbox, the host API acting for `ctx`,
/// `memory_limit` bytes of heap and a `callback_timeout` budget.
pub fn agent_vm(ctx: &Arc<AgentContext>) -> mlua::Result<(Vm, Budget)> {
    let config = &ctx.coord.config;
    let lua = new_vm(ctx.registry.clone(), config.memory_limit)?;
    // The API is host code with a bounded footprint: registered before the
    // heap limit is set, mlua skips the protected call it otherwise wraps
    // around every allocation, which takes a good part off each spawn.
    lua_api::register_all(&lua, ctx)?;
    if crate::coordination::clock::is_test_clock() {
        follow_test_clock(&lua)?;
        if let Some(spy) = HOST_SPY.with(|s| s.borrow().clone()) {
            spy_on(&lua, &ctx.id, spy)?;
        }
    }
    seal_loaded(&lua)?;
    HostChunks::unload(&lua);
    lua.set_memory_limit(config.memory_limit)?;
    let limit = Duration::from_millis(config.callback_timeout);
    let budget = Budget::install(&lua, &ctx.id, limit, ctx.coord.aborting.clone())?;
    Ok((lua, budget))
}

/// Records the host calls agents make, for `orrery test`'s host spies.
pub trait HostSpy: Send + Sync {
    /// The host functions to record (`bus.send`, `spawn.signal`).
    fn names(&self) -> Vec<String>;
    /// Agent `agent` called `name` with `args` (as JSON; what JSON cannot
    /// hold is described as text).
    fn record(&self, agent: &str, name: &str, args: Vec<serde_json::Value>);
}

thread_local! {
    static HOST_SPY: std::cell::RefCell<Option<Arc<dyn HostSpy>>> =
        const { std::cell::RefCell::new(None) };
}

/// From now on, the VMs built on this thread while it runs on the test
/// clock record their calls of the host functions `spy` names (None: stop).
pub fn spy_on_host_calls(spy: Option<Arc<dyn HostSpy>>) {
    HOST_SPY.with(|s| *s.borrow_mut() = spy);
}

/// Wraps each host function `spy` names in `lua` with a recorder.
fn spy_on(lua: &Lua, agent: &str, spy: Arc<dyn HostSpy>) -> mlua::Result<()> {
    let wrap: Function = lua
        .load("local rec, orig = ... return function(...) rec(...) return orig(...) end")
        .set_name("=[orrery] host spy")
        .into_function()?;
    for name in spy.names() {
        let Some((table, func)) = name.split_once('.') else {
            continue;
        };
        let Ok(Value::Table(t)) = lua.globals().get::<Value>(table) else {
            continue;
        };
        let Ok(Value::Function(original)) = t.get::<Value>(func) else {
            continue;
        };
        let (spy, agent, recorded) = (spy.clone(), agent.to_string(), name.clone());
        let rec = lua.create_function(move |lua, args: mlua::MultiValue| {
            let args = args
                .into_iter()
                .map(|v| {
                    let shown = format!("<{}>", v.type_name());
                    crate::lua_api::to_json_or_nil(lua, v, || recorded.clone())
                        .map(|j| j.unwrap_or(serde_json::Value::Null))
                        .unwrap_or(serde_json::Value::String(shown))
                })
                .collect();
            spy.record(&agent, &recorded, args);
            Ok(())
        })?;
        let wrapped: Function = wrap.call((rec, original))?;
        t.raw_set(func, wrapped)?;
    }
    Ok(())
}

/// Under `orrery test` a VM's own clock and dice follow the test too:
/// `os.time()` and `os.date(fmt)` read the test clock (`now()`), and
/// `math.random` starts from the same seed in every VM, so a script using
/// them behaves the same run after run.
fn follow_test_clock(lua: &Lua) -> mlua::Result<()> {
    let now = lua.create_function(|_, ()| Ok(crate::coordination::clock::now_ms_f64()))?;
    lua.load(
        r#"
        local now = ...
        local time, date, floor = os.time, os.date, math.floor
        os.time = function(t) if t == nil then return floor(now() / 1000) end return time(t) end
        os.date = function(fmt, t) if t == nil then t = floor(now() / 1000) end return date(fmt, t) end
        math.randomseed(0)
        "#,
    )
    .set_name("=[orrery] test clock")
    .call(now)
}

/// A fresh VM with only the safe libraries, before the host API.
fn new_vm(registry: Arc<ScriptRegistry>, memory_limit: usize) -> mlua::Result<Vm> {
    let libs = StdLib::COROUTINE
        | StdLib::TABLE
        | StdLib::STRING
        | StdLib::UTF8
        | StdLib::MATH
        | StdLib::OS;
    // Only the clone is kept (see `Vm`): the original's collection on drop
    // runs here, on a heap of the base library alone.
    let lua = Vm(ManuallyDrop::new(
        Lua::new_with(StdLib::NONE, LuaOptions::default())?.clone(),
    ));
    lua.load_std_libs(libs)?;
    let globals = lua.globals();

    for name in REMOVED_GLOBALS {
        globals.set(*name, Value::Nil)?;
    }
    // In place: `package.loaded.os` is this same table.
    let os: Table = globals.get("os")?;
    let names: Vec<String> = os
        .pairs::<String, Value>()
        .map(|p| p.map(|(k, _)| k))
        .collect::<mlua::Result<_>>()?;
    for name in names {
        if !SAFE_OS.contains(&name.as_str()) {
            os.raw_set(name, Value::Nil)?;
        }
    }
    let string: Table = globals.get("string")?;
    string.raw_set("dump", Value::Nil)?;

    // `load` may only compile text: bytecode can break the VM's invariants.
    let raw_load: Function = globals.get("load")?;
    globals.set(
        "load",
        lua.create_function(move |lua, args: mlua::MultiValue| {
            let mut args: Vec<Value> = args.into_iter().collect();
            // Force text mode; pass `env` only when given (an explicit nil env is nil).
            args.resize(args.len().max(3), Value::Nil);
            args[2] = Value::String(lua.create_string("t")?);
            raw_load.call::<mlua::MultiValue>(mlua::MultiValue::from_iter(args))
        })?,
    )?;

    lua.set_app_data(ModuleGraph::default());
    HOST_CHUNKS.load(&lua)?;
    super::safe_std::install(&lua, memory_limit)?;
    install_require(&lua, registry)?;
    lua.set_named_registry_value(crate::lua_api::WATCHES, lua.create_table()?)?;
    lua.set_named_registry_value(crate::lua_api::HANDLERS, lua.create_table()?)?;
    Ok(lua)
}

/// Replaces `package.loaded` (the registry's `_LOADED`, which `require`
/// reads) with a table of [`LIBRARIES`] and the host API's tables only, each
/// the table its global holds: `Lua::new_with` registered the stock
/// libraries in the old one, which `require` would hand out. A new table
/// rather than the old one emptied: walking it costs more.
fn seal_loaded(lua: &Lua) -> mlua::Result<()> {
    let globals = lua.globals();
    let names = LIBRARIES.iter().chain(lua_api::TABLES);
    let loaded = lua.create_table_with_capacity(0, names.clone().count())?;
    for name in names {
        let value: Value = match *name {
            "_G" => Value::Table(globals.clone()),
            _ => globals.raw_get(*name)?,
        };
        loaded.raw_set(*name, value)?;
    }
    lua.set_named_registry_value("_LOADED", &loaded)?;
    globals
        .raw_get::<Table>("package")?
        .raw_set("loaded", loaded)
}

/// `require(name)` finds modules in the script registry only: the scripts
/// directory's own modules, then the stdlib. No file system, no C modules.
fn install_require(lua: &Lua, registry: Arc<ScriptRegistry>) -> mlua::Result<()> {
    let loaded: Table = match lua.named_registry_value::<Value>("_LOADED")? {
        Value::Table(t) => t,
        _ => {
            let t = lua.create_table()?;
            lua.set_named_registry_value("_LOADED", &t)?;
            t
        }
    };
    let package = lua.create_table()?;
    package.set("loaded", &loaded)?;
    lua.globals().set("package", package)?;
    let require = lua.create_function(move |lua, name: String| {
        let loaded: Table = lua.named_registry_value("_LOADED")?;
        let cached: Value = loaded.get(name.as_str())?;
        modules::with_graph(lua, |g| g.required(&name));
        if !cached.is_nil() {
            return Ok(cached);
        }
        let script = registry.module(&name).ok_or_else(|| {
            let dir = registry.scripts_dir().display();
            mlua::Error::runtime(match registry.role(&name) {
                // The file is there, as a role: say why it is not a module.
                Ok(_) => format!(
                    "module '{name}' not found: {dir}/{name}.lua is a role script (the files at \
                     the top of {dir} are roles, spawned with spawn.agent('{name}')); a module \
                     lives in a subdirectory, e.g. {dir}/lib/{name}.lua, required as 'lib.{name}'"
                ),
                Err(_) => format!(
                    "module '{name}' not found: no {dir}/{}.lua and no stdlib module of that name",
                    name.replace('.', "/")
                ),
            })
        })?;
        let value: Value = modules::loading(lua, Loader::Module(name.clone()), || {
            compile(lua, &script)?.call(name.as_str())
        })?;
        let value = if value.is_nil() {
            Value::Boolean(true)
        } else {
            value
        };
        loaded.set(name.as_str(), &value)?;
        modules::with_graph(lua, |g| g.loaded(&name, script.version));
        Ok(value)
    })?;
    lua.globals().set("require", require)
}

/// Compiles `script` as text, named after its path. The bytecode is kept for
/// the next VM that loads the same script (see [`crate::lua_api::chunks`]).
pub fn compile(lua: &Lua, script: &Script) -> mlua::Result<Function> {
    crate::lua_api::chunks::compile(lua, &script.chunk_name(), &script.source)
}
