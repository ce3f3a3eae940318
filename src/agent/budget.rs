//! The per-callback time budget of an agent's VM.
//!
//! Every callback the host runs (the script's top level, `start`, each
//! message or watch dispatch, `stop`, `on_reload`) may run Lua for at most
//! `callback_timeout` ms. Only time spent running counts: while the callback
//! awaits a host call (`bus.receive`, `sleep`, a Redis round trip) its clock
//! stands still, because [`Budget::metered`] stops it whenever the callback's
//! future returns `Pending`.
//!
//! The clock is read from a count hook set on the VM's main thread; Lua copies
//! a thread's hook into every thread created from it, so it covers the threads
//! mlua creates for async calls and every coroutine the script creates. Once
//! the budget is spent the hook raises an error; a script's own `pcall` can
//! catch it, so the hook then fires before every instruction of that thread
//! and raises again, until the callback has unwound to the host.
//!
//! Within budget the hook is counted the cheap way of orrery's Lua patch
//! ([`MASK_BUDGET`], vendor/lua-src/PATCHES.md): the VM charges the count
//! at loop back-edges and function entries only, by an upper bound of the
//! instructions run since the last charge, so the hook still comes at
//! least every [`CHECK_EVERY`] instructions. A plain count hook, whatever
//! its interval, makes the VM call into the debug interface before every
//! instruction (a tenth of a message's cost).
//!
//! The hook is a plain C function, not an mlua hook: when an mlua hook
//! callback returns an error, mlua resets the stack top of the interrupted
//! function's frame (`lua_settop` in `callback_error_ext`), which runs that
//! frame's pending `__close` handlers inside the hook, where Lua has hooks off
//! and nothing could interrupt them. Ours pushes a prepared error value and
//! calls `lua_error`, touching nothing else. The value is a userdata whose
//! metatable scripts cannot reach, so turning it into text (mlua's message
//! handler does, with hooks still off) runs no script code.
//!
//! Long C calls are not interrupted by hooks: the host's replacements of the
//! pattern functions and of the other costly C functions call
//! [`Budget::check`] as they go.

use std::ffi::{CStr, c_int};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mlua::{Lua, ffi};
use parking_lot::Mutex;

use crate::error::Error;

/// VM instructions between two looks at the clock while within budget
/// (at most: the count is charged by an upper bound).
const CHECK_EVERY: c_int = 10_000;

/// The hook mask of the patched Lua's budget count (`LUA_MASKBUDGET` in
/// vendor/lua-src/lua-5.4.9/lua.h): used with a count hook's function and
/// count, charged at back-edges and function entries only.
const MASK_BUDGET: c_int = 1 << 6;

/// Registry key (by address) of the light userdata pointing at the meter.
static METER_KEY: u8 = 0;

/// Registry name of the value the hook raises.
const INTERRUPTION: &CStr = c"orrery.interruption";

/// The time budget of one agent's callbacks; cheap to clone.
#[derive(Clone)]
pub struct Budget {
    meter: Arc<Mutex<Meter>>,
}

/// Keeps the meter the hook reads through a raw pointer alive for as long as
/// the VM: mlua drops app data only after `lua_close`.
struct HookMeter(#[allow(dead_code)] Arc<Mutex<Meter>>);

struct Meter {
    agent: String,
    limit: Duration,
    /// The callback being run, when one is.
    callback: Option<String>,
    /// Running time of the current callback before its last pause.
    used: Duration,
    /// Since when the current callback is running (None while it awaits).
    running_since: Option<Instant>,
    /// The budget ran out; kept until the next callback starts.
    exceeded: Option<Error>,
    /// Lua running while no callback is being polled (a dropped callback
    /// unwinding), timed from the first look at it.
    stray_since: Option<Instant>,
    /// The last interruption the hook raised, for its text.
    last: Option<Error>,
    /// The run is aborting its agents: stop now, whatever the budget.
    aborting: Arc<AtomicBool>,
}

impl Meter {
    fn elapsed(&self, now: Instant) -> Duration {
        self.used + self.running_since.map_or(Duration::ZERO, |t| now - t)
    }

    fn timeout(&self, location: Option<String>) -> Error {
        let callback = self.callback.as_deref().unwrap_or("(outside any callback)");
        let at = location
            .map(|l| format!("; interrupted at {l}"))
            .unwrap_or_default();
        Error::AgentTimeout {
            what: format!(
                "callback '{callback}' of agent {} (setting callback_timeout{at})",
                self.agent
            ),
            limit_ms: self.limit.as_millis() as u64,
        }
    }

    /// `Some(error)` when the running code must stop now.
    fn verdict(&mut self, location: impl FnOnce() -> Option<String>) -> Option<Error> {
        if let Some(e) = &self.exceeded {
            return Some(e.clone());
        }
        if self.aborting.load(Ordering::Relaxed) {
            return Some(Error::Interrupted {
                agent: self.agent.clone(),
            });
        }
        let now = Instant::now();
        if self.running_since.is_none() {
            // Lua runs while no callback is being polled: a callback future
            // being dropped (agent_timeout) unwinds its coroutine, and the
            // script's `pcall` could catch that and loop. Bounded all the same.
            let since = *self.stray_since.get_or_insert(now);
            return (now - since > self.limit).then(|| self.timeout(location()));
        }
        if self.elapsed(now) > self.limit {
            let e = self.timeout(location());
            self.exceeded = Some(e.clone());
            return Some(e);
        }
        None
    }
}

/// The error value the hook raises: a table whose text (`__tostring`) is
/// the timeout. A table, not a userdata: the first userdata of a Rust type
/// costs each VM a metatable built by mlua, ~6% of a spawn.
fn interruption(lua: &Lua, meter: Arc<Mutex<Meter>>) -> mlua::Result<mlua::Table> {
    let text = lua.create_function(move |_, _: mlua::Value| {
        let meter = meter.lock();
        Ok(match &meter.last {
            Some(e) => e.to_string(),
            None => "interrupted by the host".to_string(),
        })
    })?;
    let metatable = lua.create_table()?;
    metatable.raw_set("__tostring", text)?;
    // Scripts can neither see nor replace it.
    metatable.raw_set("__metatable", false)?;
    let value = lua.create_table()?;
    value.set_metatable(Some(metatable))?;
    Ok(value)
}

/// The count hook of every agent VM (see the module docs).
unsafe extern "C-unwind" fn hook(state: *mut ffi::lua_State, ar: *mut ffi::lua_Debug) {
    // SAFETY: `state` is a running thread inside a hook, whose stack has
    // LUA_MINSTACK free slots; the pointer in the registry stays valid until
    // the VM is closed (see `HookMeter`).
    unsafe {
        ffi::lua_rawgetp(state, ffi::LUA_REGISTRYINDEX, &METER_KEY as *const u8 as _);
        let meter = ffi::lua_touserdata(state, -1) as *const Mutex<Meter>;
        ffi::lua_pop(state, 1);
        if meter.is_null() {
            return;
        }
        // Everything with a destructor lives inside `judge`, which has
        // returned before `lua_error` jumps over this frame.
        if !judge(&*meter, state, ar) {
            return;
        }
        ffi::lua_sethook(state, Some(hook), ffi::LUA_MASKCOUNT, 1);
        ffi::lua_getfield(state, ffi::LUA_REGISTRYINDEX, INTERRUPTION.as_ptr());
        ffi::lua_error(state);
    }
}

/// True when the hook must raise. Resets a thread left firing before every
/// instruction by an earlier interruption to the cheap interval.
unsafe fn judge(meter: &Mutex<Meter>, state: *mut ffi::lua_State, ar: *mut ffi::lua_Debug) -> bool {
    // The running function, or (when that is one of the host's own Lua
    // wrappers, say `table.insert`) the nearest script function below it.
    let location = || {
        // SAFETY: `ar` is the hook's activation record; `frame` is filled by
        // lua_getstack before lua_getinfo reads it.
        unsafe {
            let mut frame: ffi::lua_Debug = std::mem::zeroed();
            for level in 0..32 {
                let record = if level == 0 {
                    ar
                } else if ffi::lua_getstack(state, level, &mut frame) != 0 {
                    &mut frame as *mut ffi::lua_Debug
                } else {
                    break;
                };
                if ffi::lua_getinfo(state, c"Sl".as_ptr(), record) == 0 {
                    return None;
                }
                let source = CStr::from_ptr((*record).source);
                if source.to_bytes().starts_with(b"=[orrery]") {
                    continue;
                }
                let file = CStr::from_ptr((*record).short_src.as_ptr()).to_string_lossy();
                return Some(format!("{file}:{}", (*record).currentline));
            }
            None
        }
    };
    let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut m = meter.lock();
        let verdict = m.verdict(location);
        if let Some(e) = &verdict {
            m.last = Some(e.clone());
        }
        verdict.is_some()
    }));
    let raise = verdict.unwrap_or(true);
    // SAFETY: setting the hook of the running thread from inside its hook is allowed.
    if !raise && unsafe { ffi::lua_gethookmask(state) } != MASK_BUDGET {
        unsafe { ffi::lua_sethook(state, Some(hook), MASK_BUDGET, CHECK_EVERY) };
    }
    raise
}

impl Budget {
    /// Installs the budget in `lua` (its hook, and app data so host functions
    /// find it with [`Budget::of`]). Called once per VM, before any thread or
    /// coroutine is created: those copy the hook of the thread creating them.
    /// The hook also raises once `aborting` is set (the run aborts its agents).
    pub fn install(
        lua: &Lua,
        agent: &str,
        limit: Duration,
        aborting: Arc<AtomicBool>,
    ) -> mlua::Result<Budget> {
        let meter = Arc::new(Mutex::new(Meter {
            agent: agent.to_string(),
            limit,
            callback: None,
            used: Duration::ZERO,
            running_since: None,
            exceeded: None,
            stray_since: None,
            last: None,
            aborting,
        }));
        if lua.app_data_ref::<HookMeter>().is_some() {
            return Err(mlua::Error::runtime("a budget is already installed"));
        }
        lua.set_app_data(HookMeter(meter.clone()));
        let interruption = interruption(lua, meter.clone())?;
        lua.set_named_registry_value(INTERRUPTION.to_str().expect("ASCII"), interruption)?;
        let pointer = Arc::as_ptr(&meter) as *mut std::ffi::c_void;
        // SAFETY: plain stack and registry operations on the thread mlua runs
        // this on (the main thread: no callback is running).
        unsafe {
            lua.exec_raw::<()>((), |state| {
                ffi::lua_pushlightuserdata(state, pointer);
                ffi::lua_rawsetp(state, ffi::LUA_REGISTRYINDEX, &METER_KEY as *const u8 as _);
                ffi::lua_sethook(state, Some(hook), MASK_BUDGET, CHECK_EVERY);
            })?;
        }
        let budget = Budget { meter };
        lua.set_app_data(budget.clone());
        Ok(budget)
    }

    /// The budget installed in `lua`, if any.
    pub fn of(lua: &Lua) -> Option<Budget> {
        lua.app_data_ref::<Budget>().map(|b| b.clone())
    }

    /// Fails with the timeout when the current callback has spent its budget.
    /// For host code that runs long without executing Lua instructions.
    pub fn check(&self) -> Result<(), Error> {
        match self.meter.lock().verdict(|| None) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// The id of the agent whose budget this is.
    pub fn agent(&self) -> String {
        self.meter.lock().agent.clone()
    }

    /// The timeout, when the last callback exceeded its budget.
    pub fn exceeded(&self) -> Option<Error> {
        self.meter.lock().exceeded.clone()
    }

    fn begin(&self, callback: &str) {
        let mut m = self.meter.lock();
        m.callback = Some(callback.to_string());
        m.used = Duration::ZERO;
        m.running_since = None;
        m.exceeded = None;
        m.stray_since = None;
    }

    fn resume(&self) {
        let mut m = self.meter.lock();
        m.running_since = Some(Instant::now());
        m.stray_since = None;
    }

    fn pause(&self) {
        let mut m = self.meter.lock();
        if let Some(since) = m.running_since.take() {
            m.used += since.elapsed();
        }
        m.stray_since = None;
    }

    fn end(&self) {
        self.pause();
        self.meter.lock().callback = None;
    }

    /// Runs the callback future `fut` named `callback`, counting only the time
    /// it spends being polled.
    pub async fn metered<T>(&self, callback: &str, fut: impl Future<Output = T>) -> T {
        self.begin(callback);
        let mut fut = std::pin::pin!(fut);
        let out = std::future::poll_fn(|cx| {
            self.resume();
            let polled = fut.as_mut().poll(cx);
            self.pause();
            polled
        })
        .await;
        self.end();
        out
    }

    /// Runs the synchronous callback `f` named `callback` under the budget.
    pub fn metered_sync<T>(&self, callback: &str, f: impl FnOnce() -> T) -> T {
        self.begin(callback);
        self.resume();
        let out = f();
        self.end();
        out
    }
}
