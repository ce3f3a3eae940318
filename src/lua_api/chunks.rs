//! Lua chunks compiled once per process: the host's own wrappers and the
//! role scripts every new agent of a role runs. A new VM loads their bytecode
//! instead of parsing them again, which is a large share of what a spawn
//! costs beyond creating the VM itself.
//!
//! Only bytecode the host compiled itself is ever loaded; scripts still can
//! only `load` text.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, OnceLock};

use mlua::{Function, Lua, Table, chunk::ChunkMode};
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

/// [`compile`] for one of the host's own chunks, given as a static string:
/// taken from the VM's [`HostChunks`] when they hold it, else loaded alone.
pub(crate) fn host(lua: &Lua, label: &'static str, source: &'static str) -> mlua::Result<Function> {
    let loaded = lua.app_data_ref::<Loaded>().and_then(|l| {
        let i = sources(l.parts).position(|(_, s)| *s == source)?;
        Some(l.chunks.raw_get::<Function>(i + 1))
    });
    match loaded {
        Some(function) => function,
        None => named(lua, &format!("=[orrery] {label}"), source),
    }
}

/// The host's chunks loaded together, as one chunk of bytecode: a chunk
/// costs its VM about 8 k instructions beyond its text (the lookup in the
/// cache, mlua's load, the undump's header, the call of its main function),
/// and a VM loads a dozen of them. Named `=[orrery] host` in tracebacks
/// (which leave out every `=[orrery]` frame) and `error` positions; every
/// host chunk raises its errors at the caller's level or at none, so none
/// of them shows that name. A chunk whose name matters stays on its own.
pub(crate) struct HostChunks {
    /// Lists of (label, source).
    parts: Parts,
    /// The text of the one chunk, made on first use.
    text: OnceLock<Arc<str>>,
}

/// Lists of (label, source).
type Parts = &'static [&'static [(&'static str, &'static str)]];

/// Every (label, source) of `parts`, in order.
fn sources(parts: Parts) -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    parts.iter().flat_map(|p| p.iter())
}

/// A VM's [`HostChunks`]: the table of the functions that run their texts,
/// in the order of `parts`. One reference to the table rather than one per
/// function: each is a slot of mlua's reference stack, which grows in the
/// VM's heap.
struct Loaded {
    parts: Parts,
    chunks: Table,
}

impl HostChunks {
    /// The chunks of `parts`, loaded together.
    pub(crate) const fn new(parts: Parts) -> Self {
        HostChunks {
            parts,
            text: OnceLock::new(),
        }
    }

    /// Loads the chunks into `lua`: from then on, [`host`] of one of them
    /// is a function of this load, whose call runs that chunk's text then,
    /// as the call of the chunk loaded alone did.
    pub(crate) fn load(&self, lua: &Lua) -> mlua::Result<()> {
        let text = self.text.get_or_init(|| {
            let mut text = String::from("local chunks = {}\n");
            for (i, (label, source)) in sources(self.parts).enumerate() {
                let _ = write!(
                    text,
                    "-- {label}\nchunks[{}] = function(...)\n{source}\nend\n",
                    i + 1
                );
            }
            text.push_str("return chunks\n");
            Arc::from(text)
        });
        let chunks: Table = compile(lua, "=[orrery] host", text)?.call(())?;
        lua.set_app_data(Loaded {
            parts: self.parts,
            chunks,
        });
        Ok(())
    }

    /// Lets go of the chunks loaded in `lua` once its VM is built: what was
    /// made from them stays, the rest becomes garbage, so an idle VM keeps
    /// no more of them than when each chunk was loaded alone. A later
    /// [`host`] loads its chunk alone.
    pub(crate) fn unload(lua: &Lua) {
        lua.remove_app_data::<Loaded>();
    }
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
