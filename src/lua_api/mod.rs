//! The Lua API: one file per Lua table, each with one `register` function.
//!
//! Every table is a global of the agent's VM and is also placed in
//! `package.loaded`, so `local bb = require("blackboard")` works too.

mod agent;
mod blackboard;
mod bus;
pub mod chunks;
mod convert;
pub mod error_text;
mod exec;
mod fast;
mod fs;
mod http;
mod json;
mod lazy;
mod llm;
mod lock;
pub(crate) mod log;
pub mod meta;
mod metrics;
mod module;
mod options;
mod spawn;
mod stack_json;
mod state;
mod task;
pub mod time;
pub mod top_level;

use std::sync::Arc;

use mlua::{Function, Lua, Table};
use parking_lot::Mutex;

use crate::coordination::{AgentCounters, Coordination};
use crate::llm::TaskLlm;
use crate::scripts::ScriptRegistry;
use crate::store::{Delivery, Writes};

use module::IntoLuaErr;

pub use blackboard::{WATCHES, pattern_matches};
pub use bus::{HANDLERS, message_table, settle_held};
pub use convert::to_lua;
pub(crate) use convert::{FROZEN, MaxValueBytes, to_json, to_json_or_nil};
pub use time::{ROLE_MODULE, TIMERS};

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
    /// Whether a script's top level runs in the agent's VM (its waiting
    /// host functions then refuse).
    pub top_level: Arc<top_level::TopLevel>,
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
    /// Messages taken while waiting for replies (`bus.request`,
    /// `bus.replies`) that were not those replies: handed out first, in order.
    pub stash: std::collections::VecDeque<Delivery>,
    /// Timers set with `every` and `after`.
    pub timers: time::Timers,
    /// Blackboard changes, once the agent watches anything.
    pub watch_rx: Option<tokio::sync::broadcast::Receiver<crate::store::BlackboardEvent>>,
    /// Writes sent without waiting (`blackboard.set`, `bus.send` on a server
    /// store), settled before the agent's next store call and when its
    /// callback ends.
    pub writes: Writes,
    /// Values this agent wrote since it last observed the store.
    pub own_writes: blackboard::OwnWrites,
    /// Set for an agent brought back by `orrery resume`: its last checkpoint
    /// (`None` when it kept none). It then runs `on_resume` instead of `start`.
    pub resumed: Option<Option<serde_json::Value>>,
    /// The id of the message `bus.send` sent last on its fast path, where
    /// it stays while Lua copies it (see `fast`).
    pub sent_id: Option<Arc<str>>,
    /// The names that fast path sent with last, shared by its messages.
    pub sent_names: fast::SentNames,
    /// The phase a resumed agent had reached before its process went: until
    /// it moves past it, `state.set` to it or to an earlier phase does
    /// nothing, so a `start` run again replays its phase changes.
    pub replay_until: Option<crate::coordination::AgentPhase>,
    /// The agents whose end this one saw with `spawn.wait`, kept on the
    /// test clock only (`orrery test`: a spec that waited for an agent's
    /// failure expected it; one that did not is failed by it).
    pub waited: Vec<String>,
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
            top_level: Arc::default(),
        })
    }

    /// True when host calls complete without waiting (embedded store).
    pub fn embedded(&self) -> bool {
        self.coord.store.is_embedded()
    }
}

/// How a table is built: its functions, acting for the agent `ctx`.
type Register = fn(&Lua, &Arc<AgentContext>) -> mlua::Result<Table>;

/// Every table of the API, under the name it has as a global and in
/// `package.loaded`: the one list (the sandbox and the annotations' test
/// read it through [`TABLES`]).
const API: [(&str, Register); 15] = [
    ("task", task::register),
    ("agent", agent::register),
    ("blackboard", blackboard::register),
    ("bus", bus::register),
    ("state", state::register),
    ("spawn", spawn::register),
    ("lock", lock::register),
    ("metrics", metrics::register),
    ("log", log::register),
    ("llm", llm::register),
    ("json", json::register),
    ("time", time::register),
    ("fs", fs::register),
    ("exec", exec::register),
    ("http", http::register),
];

/// The API's host chunks, loaded with the sandbox's as one (see
/// [`chunks::HostChunks`]): every chunk [`chunks::host`] loads at each
/// spawn but the lazy functions' stub, whose chunk name tracebacks read.
pub(crate) const HOST_CHUNKS: &[(&str, &str)] = &[
    ("lock.with", lock::WITH),
    ("blackboard.get", blackboard::GET),
    ("blackboard.set", blackboard::SET),
    ("blackboard.update", blackboard::UPDATE),
    ("bus.send", bus::SEND),
    ("bus.message", bus::PACK),
    ("bus.receive", bus::RECEIVE),
    ("task", task::FREEZE),
];

/// The name of every table [`register_all`] makes a global (and puts in
/// `package.loaded`), in [`API`]'s order.
pub const TABLES: &[&str] = &names(&API);

const fn names<const N: usize>(api: &[(&'static str, Register); N]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = api[i].0;
        i += 1;
    }
    out
}

/// Registers every API table in `lua` for the agent `ctx`.
pub fn register_all(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<()> {
    error_text::install_tostring(lua)?;
    lua.set_app_data(MaxValueBytes(ctx.coord.config.max_value_bytes));
    lua.set_app_data(Interned::default());
    top_level::install(lua, ctx.top_level.clone());
    let globals = lua.globals();
    let loaded: Table = lua.named_registry_value("_LOADED")?;
    for (name, register) in API {
        let table = register(lua, ctx)?;
        globals.set(name, &table)?;
        loaded.set(name, table)?;
    }
    // `sleep`, `now` and the timers are used everywhere; keep them short.
    let time: Table = globals.get("time")?;
    for name in ["sleep", "now", "every", "after"] {
        globals.set(name, time.get::<Function>(name)?)?;
    }
    Ok(())
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
///
/// Built as an external error so scripts that catch it with `pcall` see the
/// message itself, not mlua's "runtime error: " prefix.
pub(crate) fn arg_err(func: &str, msg: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::external(format!("{func}: {msg}"))
}

/// Longest wait or lifetime a script can ask for (a year): past it the clock
/// arithmetic would overflow, and no task runs that long.
const MAX_MS: f64 = 365.0 * 24.0 * 3600.0 * 1000.0;

/// A script's milliseconds as a duration: negative and NaN are zero, and
/// anything longer than [`MAX_MS`] (`math.huge` included) is that.
pub(crate) fn millis(ms: f64) -> std::time::Duration {
    let ms = if ms.is_nan() {
        0.0
    } else {
        ms.clamp(0.0, MAX_MS)
    };
    std::time::Duration::from_secs_f64(ms / 1000.0)
}

/// Lua strings of names the API hands out again and again (agent ids, roles,
/// message types), kept per VM: handing out a kept string allocates nothing,
/// where creating one is a protected call once the VM has a memory limit.
#[derive(Default)]
struct Interned(crate::fast_map::FastMap<String, mlua::LuaString>);

/// Most names kept per VM; past it, new names are created each time.
const MAX_INTERNED: usize = 256;

/// Three names as Lua strings, kept for the next time when there is room (the
/// kept strings are reached once for the three).
pub(crate) fn interned3(
    lua: &Lua,
    texts: [&str; 3],
) -> mlua::Result<(mlua::Value, mlua::Value, mlua::Value)> {
    let Ok(Some(mut kept)) = lua.try_app_data_mut::<Interned>() else {
        let s = |t: &str| lua.create_string(t).map(mlua::Value::String);
        return Ok((s(texts[0])?, s(texts[1])?, s(texts[2])?));
    };
    Ok((
        kept.get(lua, texts[0])?,
        kept.get(lua, texts[1])?,
        kept.get(lua, texts[2])?,
    ))
}

impl Interned {
    fn get(&mut self, lua: &Lua, text: &str) -> mlua::Result<mlua::Value> {
        if let Some(s) = self.0.get(text) {
            return Ok(mlua::Value::String(s.clone()));
        }
        let s = lua.create_string(text)?;
        if self.0.len() < MAX_INTERNED {
            self.0.insert(text.to_string(), s.clone());
        }
        Ok(mlua::Value::String(s))
    }
}

/// Waits for the agent's writes sent without waiting, oldest first; the
/// first that failed is the error. True when one had to be sent again (it
/// may then have been applied after a read sent meanwhile).
///
/// Every store call but a write settles (and so do `sleep` and the end of a
/// callback), and counts as observing the store: it may see what others
/// did, so the values the agent wrote are no longer what it reads back
/// without asking (see `blackboard::OwnWrites`).
pub async fn settle_writes(c: &AgentContext) -> crate::error::Result<bool> {
    c.local.lock().own_writes.forget();
    settle_only(c).await
}

/// [`settle_writes`] without observing the store: the agent's own writes
/// stay readable without asking.
pub(crate) async fn settle_only(c: &AgentContext) -> crate::error::Result<bool> {
    let mut writes = {
        let mut local = c.local.lock();
        if local.writes.is_empty() {
            return Ok(false);
        }
        std::mem::take(&mut local.writes)
    };
    let settled = writes.settle().await;
    c.local.lock().writes = writes;
    Ok(settled?)
}

/// True when the agent must settle its writes before it sends another (see
/// [`Writes::must_settle_before_write`]).
pub(crate) fn must_settle(c: &AgentContext) -> bool {
    let epoch = c.coord.store.epoch();
    c.local.lock().writes.must_settle_before_write(epoch)
}

/// The host function `settle()` of a write wrapper: makes room for the
/// agent's next write (see [`Writes::settle_for_write`]).
pub(crate) async fn settle(_: Lua, c: Arc<AgentContext>, (): ()) -> mlua::Result<()> {
    let epoch = c.coord.store.epoch();
    let mut writes = std::mem::take(&mut c.local.lock().writes);
    let settled = writes.settle_for_write(epoch).await;
    c.local.lock().writes = writes;
    settled.into_lua_err()
}
