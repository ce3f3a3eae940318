//! The Lua API: one file per Lua table, each with one `register` function.
//!
//! Every table is a global of the agent's VM and is also placed in
//! `package.loaded`, so `local bb = require("blackboard")` works too.

mod agent;
mod blackboard;
mod bus;
mod exec;
mod fs;
mod http;
mod json;
mod llm;
mod lock;
mod log;
mod metrics;
mod spawn;
mod state;
mod task;
mod time;

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;
use mlua::{FromLuaMulti, Function, IntoLuaMulti, Lua, LuaSerdeExt, Table};
use parking_lot::Mutex;
use serde_json::Value;

use crate::coordination::{AgentCounters, Coordination};
use crate::error::Error;
use crate::scripts::ScriptRegistry;
use crate::store::Delivery;

pub use blackboard::{WATCHES, pattern_matches};
pub use bus::{HANDLERS, message_table, settle_held};
pub use llm::TaskLlm;
pub use task::OUTPUT_PREFIX;

/// What the host functions of one agent's VM act on.
pub struct AgentContext {
    /// Agent id (`beta-1`).
    pub id: String,
    /// Role (`beta`).
    pub role: String,
    /// The task's shared primitives.
    pub coord: Arc<Coordination>,
    /// Where `require` finds modules.
    pub registry: Arc<ScriptRegistry>,
    /// This agent's counters.
    pub counters: Arc<AgentCounters>,
    /// Queues this agent reads: its own, then its role's.
    pub queues: Vec<String>,
    /// Agent-local state the host keeps between calls.
    pub local: Mutex<AgentLocal>,
    /// The task's LLM client, shared by its agents.
    pub llm: TaskLlm,
}

/// Host-side state of one agent.
#[derive(Default)]
pub struct AgentLocal {
    /// Messages handed out by `bus.receive` and not yet acknowledged: they are
    /// acknowledged at the next receive or when the callback returns, and given
    /// back if it fails.
    pub held: Vec<Delivery>,
    /// `agent.finish()` was called.
    pub finished: bool,
    /// The agent has registered watches or message handlers.
    pub has_handlers: bool,
    /// Blackboard changes, once the agent watches anything.
    pub watch_rx: Option<tokio::sync::broadcast::Receiver<crate::store::BlackboardEvent>>,
}

impl AgentContext {
    /// The context of agent `id` of `role` in the task of `coord`.
    pub fn new(
        id: &str,
        role: &str,
        coord: Arc<Coordination>,
        registry: Arc<ScriptRegistry>,
        llm: TaskLlm,
    ) -> Arc<AgentContext> {
        Arc::new(AgentContext {
            id: id.to_string(),
            role: role.to_string(),
            counters: coord.metrics.agent(id),
            queues: crate::coordination::MessageBus::queues_of(id, role),
            coord,
            registry,
            local: Mutex::new(AgentLocal::default()),
            llm,
        })
    }

    /// True when host calls complete without waiting (embedded store).
    pub fn embedded(&self) -> bool {
        self.coord.store.is_embedded()
    }
}

/// Registers every API table in `lua` for the agent `ctx`.
pub fn register_all(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<()> {
    let tables: [(&str, Table); 15] = [
        ("task", task::register(lua, ctx)?),
        ("agent", agent::register(lua, ctx)?),
        ("blackboard", blackboard::register(lua, ctx)?),
        ("bus", bus::register(lua, ctx)?),
        ("state", state::register(lua, ctx)?),
        ("spawn", spawn::register(lua, ctx)?),
        ("lock", lock::register(lua, ctx)?),
        ("metrics", metrics::register(lua, ctx)?),
        ("log", log::register(lua, ctx)?),
        ("llm", llm::register(lua, ctx)?),
        (
            "json",
            json::register(lua, ctx.coord.config.max_value_bytes)?,
        ),
        ("time", time::register(lua)?),
        ("fs", fs::register(lua, ctx)?),
        ("exec", exec::register(lua, ctx)?),
        ("http", http::register(lua, ctx)?),
    ];
    lua.set_app_data(MaxValueBytes(ctx.coord.config.max_value_bytes));
    let globals = lua.globals();
    let loaded: Table = lua.named_registry_value("_LOADED")?;
    for (name, table) in tables {
        globals.set(name, &table)?;
        loaded.set(name, table)?;
    }
    // `sleep` and `now` are used everywhere; keep them short.
    let time: Table = globals.get("time")?;
    globals.set("sleep", time.get::<Function>("sleep")?)?;
    globals.set("now", time.get::<Function>("now")?)?;
    Ok(())
}

/// Wraps a host error so it reaches Lua as a catchable error and comes back
/// out of the VM with its kind intact.
pub(crate) fn host_err(e: Error) -> mlua::Error {
    mlua::Error::external(e)
}

/// The table standing for a capability the role was not granted: indexing it
/// fails with a message saying how to grant it (`setting` is the line to add).
pub(crate) fn not_granted(lua: &Lua, name: &str, role: &str, setting: &str) -> mlua::Result<Table> {
    let (name, role, setting) = (name.to_string(), role.to_string(), setting.to_string());
    let meta = lua.create_table()?;
    meta.set(
        "__index",
        lua.create_function(
            move |_, (_, key): (mlua::Value, mlua::Value)| -> mlua::Result<()> {
                let key = key.to_string().unwrap_or_default();
                Err(mlua::Error::runtime(format!(
                    "{name}.{key}: capability not granted to role '{role}' \
                 (grant it in orrery.toml: [roles.{role}.capabilities] {setting})"
                )))
            },
        )?,
    )?;
    meta.set("__metatable", false)?;
    let t = lua.create_table()?;
    t.set_metatable(Some(meta))?;
    Ok(t)
}

/// Argument error in the style `blackboard.set: expected string key, got nil`.
pub(crate) fn arg_err(func: &str, msg: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(format!("{func}: {msg}"))
}

/// How Lua tables become JSON: an empty table is an empty array (lists are far
/// more common than empty objects in agent state), and a table mixing list and
/// map entries becomes an object instead of silently dropping the map part.
const JSON_OPTIONS: mlua::serde::DeserializeOptions = mlua::serde::DeserializeOptions::new()
    .encode_empty_tables_as_array(true)
    .detect_mixed_tables(true);

/// Converts a Lua value to JSON, naming the call and what was passed on failure
/// (a function, userdata, or cyclic table cannot be stored).
pub(crate) fn to_json(lua: &Lua, value: mlua::Value, what: &str) -> mlua::Result<Value> {
    match &value {
        mlua::Value::Function(_) | mlua::Value::Thread(_) => {
            return Err(mlua::Error::runtime(format!(
                "{what}: a {} cannot be stored (only nil, booleans, numbers, strings and tables)",
                value.type_name()
            )));
        }
        mlua::Value::UserData(_) | mlua::Value::LightUserData(_) if !value.is_null() => {
            return Err(mlua::Error::runtime(format!(
                "{what}: a userdata cannot be stored"
            )));
        }
        mlua::Value::Table(t) => {
            let limit = lua
                .app_data_ref::<MaxValueBytes>()
                .map_or(usize::MAX, |l| l.0);
            check_shape(t, what, limit)?
        }
        _ => {}
    }
    lua.from_value_with::<Value>(value, JSON_OPTIONS)
        .map_err(|e| {
            mlua::Error::runtime(format!(
                "{what}: value cannot be stored as JSON: {}",
                short(&e)
            ))
        })
}

/// Deepest nesting of tables a value may have: JSON parsers (serde_json
/// included) refuse deeper documents, and converting one would recurse deeply.
pub const MAX_DEPTH: usize = 128;

/// The `max_value_bytes` of the agent, kept in the VM for [`to_json`].
struct MaxValueBytes(usize);

/// Walks a table before it is converted: refuses nesting deeper than
/// [`MAX_DEPTH`] (a cycle is infinitely deep), and values that cannot fit in
/// `limit` bytes of JSON, counting every occurrence of a shared sub-table (a
/// table holding the same table twice, 64 times over, would expand to 2^64
/// entries in the host, where nothing could interrupt it).
fn check_shape(root: &Table, what: &str, limit: usize) -> mlua::Result<()> {
    let mut stack = vec![(root.clone(), 1usize)];
    let mut size = 0usize;
    while let Some((t, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(mlua::Error::runtime(format!(
                "{what}: value is nested deeper than {MAX_DEPTH} levels (or contains a cycle)"
            )));
        }
        for pair in t.pairs::<mlua::Value, mlua::Value>() {
            let (k, v) = pair?;
            for x in [k, v] {
                size += match x {
                    mlua::Value::String(s) => s.as_bytes().len() + 2,
                    mlua::Value::Table(inner) => {
                        stack.push((inner, depth + 1));
                        2
                    }
                    _ => 1,
                };
            }
            if size > limit {
                return Err(mlua::Error::runtime(format!(
                    "{what}: value is larger than max_value_bytes ({limit} bytes)"
                )));
            }
        }
    }
    Ok(())
}

/// Converts JSON to a Lua value (objects and arrays become tables; null inside
/// arrays and objects becomes `json.null`).
pub fn to_lua(lua: &Lua, value: &Value) -> mlua::Result<mlua::Value> {
    lua.to_value(value)
}

/// The first line of an mlua error, without the "runtime error: " noise.
fn short(e: &mlua::Error) -> String {
    let s = e.to_string();
    let first = s.lines().next().unwrap_or_default();
    first.trim_start_matches("runtime error: ").to_string()
}

/// Registers a host function that calls the store: synchronous when the store
/// is embedded (its futures are ready on first poll, so no coroutine yield is
/// paid), async otherwise. `f` must never wait on anything but the store.
pub(crate) fn store_fn<A, R, F, Fut>(lua: &Lua, embedded: bool, f: F) -> mlua::Result<Function>
where
    A: FromLuaMulti + 'static,
    R: IntoLuaMulti + 'static,
    F: Fn(Lua, A) -> Fut + Send + 'static,
    Fut: Future<Output = mlua::Result<R>> + Send + 'static,
{
    if embedded {
        lua.create_function(move |lua, args: A| {
            f(lua.clone(), args).now_or_never().unwrap_or_else(|| {
                Err(mlua::Error::runtime(
                    "host function waited on an embedded store",
                ))
            })
        })
    } else {
        lua.create_async_function(f)
    }
}
