//! Lua chunks compiled once per process: the host's own wrappers and the
//! role scripts every new agent of a role runs. A new VM loads their bytecode
//! instead of parsing them again, which is a large share of what a spawn
//! costs beyond creating the VM itself.
//!
//! Only bytecode the host compiled itself is ever loaded; scripts still can
//! only `load` text.

use std::collections::HashMap;
use std::sync::Arc;

use mlua::{Function, Lua, chunk::ChunkMode};
use parking_lot::Mutex;

/// Most chunks kept; past it the cache starts over (a long session of hot
/// reloads would otherwise keep every old version of every script).
const MAX_CHUNKS: usize = 512;

/// Bytecode by source identity. The key is the address and length of a
/// source the entry keeps alive, so the address cannot be reused while cached.
struct Entry {
    _source: Arc<str>,
    name: String,
    bytecode: Arc<[u8]>,
}

static CACHE: Mutex<Option<HashMap<(usize, usize), Entry>>> = Mutex::new(None);

/// Compiles `source` (named `name`, as `@path` or `=label`) into a function of
/// `lua`, reusing the bytecode of an earlier compilation of the same source.
/// Syntax errors are reported as by [`Lua::load`], with the name and line.
pub fn compile(lua: &Lua, name: &str, source: &Arc<str>) -> mlua::Result<Function> {
    let key = (source.as_ptr() as usize, source.len());
    let cached = CACHE
        .lock()
        .as_ref()
        .and_then(|c| c.get(&key))
        .filter(|e| e.name == name)
        .map(|e| e.bytecode.clone());
    if let Some(bytecode) = cached {
        return lua
            .load(&bytecode[..])
            .set_name(name)
            .set_mode(ChunkMode::Binary)
            .into_function();
    }
    let function = lua
        .load(&**source)
        .set_name(name)
        .set_mode(ChunkMode::Text)
        .into_function()?;
    let entry = Entry {
        _source: source.clone(),
        name: name.to_string(),
        bytecode: function.dump(false).into(),
    };
    let mut cache = CACHE.lock();
    let cache = cache.get_or_insert_with(HashMap::new);
    if cache.len() >= MAX_CHUNKS {
        cache.clear();
    }
    cache.insert(key, entry);
    Ok(function)
}

/// [`compile`] for one of the host's own chunks, given as a static string.
pub(crate) fn host(lua: &Lua, label: &'static str, source: &'static str) -> mlua::Result<Function> {
    named(lua, &format!("=[orrery] {label}"), source)
}

/// [`host`] under a chunk name of its own (`=llm.chat`), which the
/// script's tracebacks show.
pub(crate) fn named(lua: &Lua, name: &str, source: &'static str) -> mlua::Result<Function> {
    static SOURCES: Mutex<Vec<(usize, Arc<str>)>> = Mutex::new(Vec::new());
    let shared = {
        let mut sources = SOURCES.lock();
        let address = source.as_ptr() as usize;
        match sources.iter().find(|(a, _)| *a == address) {
            Some((_, s)) => s.clone(),
            None => {
                let s: Arc<str> = Arc::from(source);
                sources.push((address, s.clone()));
                s
            }
        }
    };
    compile(lua, name, &shared)
}
