//! `time`: `sleep(ms)` (blocks only this agent), `now()` (ms since the epoch,
//! with sub-millisecond precision), and timers: `every(ms, fn)` and
//! `after(ms, fn)` run `fn` as a callback of its own, between the agent's
//! other callbacks, and return an id for `cancel(id)`. `sleep`, `now`,
//! `every` and `after` are also globals.
//!
//! A timer callback is like a message handler: it runs under the callback
//! budget, and new code is taken before it (a switch point of hot reload).
//! Given a function, a timer keeps calling that function; given the name of
//! a function of the role's module (`every(1000, "tick")`), it calls
//! `M.tick(self)` of the code current at each round, so a reload changes
//! what it does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use mlua::{Lua, Table, Value};
use tokio::time::Instant;

use super::module::{IntoLuaErr, Module};
use super::{AgentContext, arg_err, millis, settle_writes};

/// Name of the registry table holding each timer's function or function name, by id.
pub const TIMERS: &str = "orrery.timers";

/// Name of the registry value holding the role's module table, once its
/// script has loaded (the agent keeps it current across reloads): what a
/// timer's function name is checked against when it is set.
pub const ROLE_MODULE: &str = "orrery.role_module";

/// Most timers one agent may have set at once: each is host memory the
/// script controls.
pub const MAX_TIMERS: usize = 1_000;

/// The agent's timers, by id.
#[derive(Debug, Default)]
pub struct Timers {
    next_id: i64,
    timers: BTreeMap<i64, Timer>,
}

/// One timer: when it is due next, and its period if it repeats.
#[derive(Debug, Clone, Copy)]
pub struct Timer {
    /// When it fires next.
    pub due: Instant,
    /// `every`'s period; `None` for `after`.
    pub every: Option<Duration>,
}

impl Timers {
    fn add(&mut self, first: Duration, every: Option<Duration>) -> i64 {
        self.next_id += 1;
        let timer = Timer {
            due: Instant::now() + first,
            every,
        };
        self.timers.insert(self.next_id, timer);
        self.next_id
    }

    fn cancel(&mut self, id: i64) -> bool {
        self.timers.remove(&id).is_some()
    }

    /// True when no timer is set.
    pub fn is_empty(&self) -> bool {
        self.timers.is_empty()
    }

    /// The timer due first: its id and when.
    pub fn next(&self) -> Option<(i64, Instant)> {
        self.timers
            .iter()
            .map(|(id, t)| (*id, t.due))
            .min_by_key(|(id, due)| (*due, *id))
    }

    /// Timer `id` fires now: `every` is due again a period after it was due
    /// (or a period from now, when it is that late: no burst of rounds to
    /// catch up), `after` is gone. Returns the timer, or `None` when it
    /// was cancelled meanwhile.
    pub fn fire(&mut self, id: i64) -> Option<Timer> {
        let timer = *self.timers.get(&id)?;
        match timer.every {
            Some(period) => {
                let now = Instant::now();
                let next = (timer.due + period).max(now);
                self.timers.get_mut(&id).expect("looked up above").due = next;
            }
            None => {
                self.timers.remove(&id);
            }
        }
        Some(timer)
    }
}

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    lua.set_named_registry_value(TIMERS, lua.create_table()?)?;
    let m = Module::new(lua, ctx)?;
    m.wait("sleep", sleep)?;
    m.sync("now", now)?;
    m.sync("every", |lua, c, args| {
        set_timer(lua, c, "time.every", args)
    })?;
    m.sync("after", |lua, c, args| {
        set_timer(lua, c, "time.after", args)
    })?;
    m.sync("cancel", cancel)?;
    Ok(m.finish())
}

/// `sleep(ms)`: blocks this agent only. A blocking call: the agent's writes
/// are settled before it sleeps.
async fn sleep(_: Lua, c: Arc<AgentContext>, ms: Value) -> mlua::Result<()> {
    let ms = number_arg("sleep", 1, "ms", &ms)?;
    settle_writes(&c).await.into_lua_err()?;
    let sleep = tokio::time::sleep(millis(ms));
    sleep.instrument(crate::trace::host_call("sleep")).await;
    Ok(())
}

/// `now()`: milliseconds since the epoch, with sub-millisecond precision.
/// Under `orrery test`, the test clock (see `coordination::clock`).
fn now(_: &Lua, _: &AgentContext, (): ()) -> mlua::Result<f64> {
    Ok(crate::coordination::clock::now_ms_f64())
}

/// `every(ms, fn)` and `after(ms, fn)` (`func`): the new timer's id.
fn set_timer(
    lua: &Lua,
    c: &AgentContext,
    func: &str,
    (ms, callback): (Value, Value),
) -> mlua::Result<i64> {
    let repeats = func == "time.every";
    let ms = number_arg(func, 1, "ms", &ms)?;
    if repeats && ms < 1.0 {
        return Err(arg_err(
            func,
            format!("argument #1 'ms' must be at least 1 (a period), got {ms}"),
        ));
    }
    if !matches!(callback, Value::Function(_) | Value::String(_)) {
        return Err(arg_err(
            func,
            format!(
                "argument #2 'fn' must be a function or the name of a function of \
                 the role's module, got {}",
                callback.type_name()
            ),
        ));
    }
    if let Value::String(name) = &callback {
        check_module_function(lua, c, func, name)?;
    }
    let period = millis(ms);
    let id = {
        let mut local = c.local.lock();
        if local.timers.timers.len() >= MAX_TIMERS {
            return Err(arg_err(
                func,
                format!(
                    "agent {} already has {MAX_TIMERS} timers set; cancel some \
                     (time.cancel) before setting more",
                    c.id
                ),
            ));
        }
        local.timers.add(period, repeats.then_some(period))
    };
    let timers: Table = lua.named_registry_value(TIMERS)?;
    timers.raw_set(id, callback)?;
    Ok(id)
}

/// Refuses a timer naming a function the role's module does not define,
/// at the call rather than at each round. Only once the module is known: a
/// top level runs before its script returned the module (and, at a
/// reload, next to the old one, which may lack a function the new code
/// adds), so there the name is checked at each round only.
fn check_module_function(
    lua: &Lua,
    c: &AgentContext,
    func: &str,
    name: &mlua::LuaString,
) -> mlua::Result<()> {
    if c.top_level.active() {
        return Ok(());
    }
    let Value::Table(module) = lua.named_registry_value::<Value>(ROLE_MODULE)? else {
        return Ok(());
    };
    match module.get::<Value>(name.clone())? {
        Value::Function(_) => Ok(()),
        other => Err(arg_err(
            func,
            format!(
                "argument #2 'fn' names '{}', which the role's module does not define \
                 as a function (found {})",
                name.to_string_lossy(),
                other.type_name()
            ),
        )),
    }
}

/// `cancel(id)`: true when the timer was still set.
fn cancel(lua: &Lua, c: &AgentContext, id: Value) -> mlua::Result<bool> {
    let Value::Integer(id) = id else {
        return Err(arg_err(
            "time.cancel",
            format!(
                "argument #1 'id' must be a timer id (from every or after), got {}",
                id.type_name()
            ),
        ));
    };
    let timers: Table = lua.named_registry_value(TIMERS)?;
    timers.raw_set(id, Value::Nil)?;
    Ok(c.local.lock().timers.cancel(id))
}

/// Argument `index` (`name`) of `func` as a number, or an error saying what was expected.
fn number_arg(func: &str, index: usize, name: &str, value: &Value) -> mlua::Result<f64> {
    match value {
        Value::Integer(n) => Ok(*n as f64),
        Value::Number(n) if !n.is_nan() => Ok(*n),
        // NaN compares false with everything: `every(0/0, f)` passed the
        // period check and fired without pause.
        Value::Number(_) => Err(arg_err(
            func,
            format!("argument #{index} '{name}' must be a number of milliseconds, got nan"),
        )),
        other => Err(arg_err(
            func,
            format!(
                "argument #{index} '{name}' must be a number of milliseconds, got {}",
                other.type_name()
            ),
        )),
    }
}
