//! Builds an agent's Lua VM: safe standard libraries only, text-only `load`,
//! `require` confined to the script registry (and recording what it loads, for
//! hot reload), and a heap limit.
//!
//! What a VM has: the base functions (less `dofile`, `loadfile`), `coroutine`,
//! `table`, `string` (less `string.dump`), `utf8`, `math` and the clock part
//! of `os` (`time`, `clock`, `date`, `difftime`). Not `io`, `debug`,
//! `package.loadlib`, C modules, `os.execute`/`exit`/`remove`/`getenv`, nor
//! bytecode. The functions that could stall the host are replaced (see
//! [`super::safe_std`]). A Rust panic is never swallowed by the script's
//! `pcall` or `coroutine.resume`: it reaches the agent's runner, which fails
//! the agent.

use std::sync::Arc;

use mlua::{Function, Lua, LuaOptions, StdLib, Table, Value};

use super::bytecode::check_no_close;
use super::modules::{self, Loader, ModuleGraph};
use crate::scripts::{Script, ScriptRegistry};

/// `os` functions that only read the clock.
const SAFE_OS: &[&str] = &["time", "clock", "date", "difftime"];

/// Globals removed from every VM: they reach the file system or load bytecode.
const REMOVED_GLOBALS: &[&str] = &["dofile", "loadfile"];

/// A fresh VM with only the safe libraries and `memory_limit` bytes of heap.
pub fn new_vm(registry: Arc<ScriptRegistry>, memory_limit: usize) -> mlua::Result<Lua> {
    let libs = StdLib::COROUTINE
        | StdLib::TABLE
        | StdLib::STRING
        | StdLib::UTF8
        | StdLib::MATH
        | StdLib::OS;
    let lua = Lua::new_with(libs, LuaOptions::default())?;
    let globals = lua.globals();

    for name in REMOVED_GLOBALS {
        globals.set(*name, Value::Nil)?;
    }
    let os: Table = globals.get("os")?;
    let safe_os = lua.create_table()?;
    for name in SAFE_OS {
        safe_os.set(*name, os.get::<Value>(*name)?)?;
    }
    globals.set("os", safe_os)?;
    let string: Table = globals.get("string")?;
    string.set("dump", Value::Nil)?;

    // `load` may only compile text: bytecode can break the VM's invariants.
    let raw_load: Function = globals.get("load")?;
    globals.set(
        "load",
        lua.create_function(move |lua, args: mlua::MultiValue| {
            let mut args: Vec<Value> = args.into_iter().collect();
            let chunk_name = match args.get(1) {
                Some(Value::String(s)) => s.to_string_lossy(),
                _ => "load".to_string(),
            };
            // Force text mode; pass `env` only when given (an explicit nil env is nil).
            args.resize(args.len().max(3), Value::Nil);
            args[2] = Value::String(lua.create_string("t")?);
            let loaded = raw_load.call::<mlua::MultiValue>(mlua::MultiValue::from_iter(args))?;
            if let Some(Value::Function(f)) = loaded.front()
                && let Err(e) = check_no_close(f, &chunk_name)
            {
                let message = e.to_string();
                let message = lua.create_string(message.trim_start_matches("runtime error: "))?;
                return Ok(mlua::MultiValue::from_iter([
                    Value::Nil,
                    Value::String(message),
                ]));
            }
            Ok(loaded)
        })?,
    )?;

    lua.set_app_data(ModuleGraph::default());
    super::safe_std::install(&lua, memory_limit)?;
    install_require(&lua, registry)?;
    lua.set_named_registry_value(crate::lua_api::WATCHES, lua.create_table()?)?;
    lua.set_named_registry_value(crate::lua_api::HANDLERS, lua.create_table()?)?;
    lua.set_memory_limit(memory_limit)?;
    Ok(lua)
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
            mlua::Error::runtime(format!(
                "module '{name}' not found: no {}/{}.lua and no stdlib module of that name",
                registry.scripts_dir().display(),
                name.replace('.', "/")
            ))
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

/// Compiles `script` as text, named after its path, and refuses it when it
/// declares to-be-closed variables (see [`super::bytecode`]). The bytecode is
/// kept for the next VM that loads the same script (see [`crate::lua_api::chunks`]).
pub fn compile(lua: &Lua, script: &Script) -> mlua::Result<Function> {
    crate::lua_api::chunks::compile(lua, &script.chunk_name(), &script.source, |f| {
        check_no_close(f, &script.path.display().to_string())
    })
}
