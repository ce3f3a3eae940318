//! The per-callback time budget of an agent's VM.
//!
//! Every callback the host runs (the script's top level, `start`, each
//! message or watch dispatch, `stop`, `on_reload`) may run Lua for at most
//! `callback_timeout` ms. Only time spent running counts: while the callback
//! awaits a host call (`bus.receive`, `sleep`, a Redis round trip) its clock
//! stands still, because [`Budget::metered`] stops it whenever the callback's
//! future returns `Pending`.
//!
//! The clock is read from a global count hook, which covers the VM's main
//! thread, every thread mlua creates for async calls, and (Lua 5.4 copies the
//! hook into new threads) every coroutine the script creates. Once the budget
//! is spent the hook raises [`Error::AgentTimeout`]; a script's own `pcall` can
//! catch that error, so from then on the hook fires before every instruction
//! of the thread and raises again, until the callback has unwound to the host.
//! Long C calls are not interrupted by hooks: the host's replacements of the
//! pattern functions and table shifts call [`Budget::check`] as they go.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::{HookTriggers, Lua, VmState};
use parking_lot::Mutex;

use crate::error::Error;

/// VM instructions between two looks at the clock while within budget.
const CHECK_EVERY: u32 = 10_000;

/// The time budget of one agent's callbacks; cheap to clone.
#[derive(Clone)]
pub struct Budget {
    meter: Arc<Mutex<Meter>>,
}

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

impl Budget {
    /// Installs the budget in `lua` (its hook, and app data so host functions
    /// find it with [`Budget::of`]).
    pub fn install(lua: &Lua, agent: &str, limit: Duration) -> mlua::Result<Budget> {
        let budget = Budget {
            meter: Arc::new(Mutex::new(Meter {
                agent: agent.to_string(),
                limit,
                callback: None,
                used: Duration::ZERO,
                running_since: None,
                exceeded: None,
                stray_since: None,
            })),
        };
        budget.set_hook(lua, CHECK_EVERY)?;
        lua.set_app_data(budget.clone());
        Ok(budget)
    }

    /// The budget installed in `lua`, if any.
    pub fn of(lua: &Lua) -> Option<Budget> {
        lua.app_data_ref::<Budget>().map(|b| b.clone())
    }

    fn set_hook(&self, lua: &Lua, every: u32) -> mlua::Result<()> {
        let budget = self.clone();
        lua.set_global_hook(
            HookTriggers::new().every_nth_instruction(every),
            move |lua, debug| {
                let location = || {
                    let source = debug.source();
                    let file = source.short_src?;
                    Some(format!("{file}:{}", debug.current_line()?))
                };
                let verdict = budget.meter.lock().verdict(location);
                match verdict {
                    None => Ok(VmState::Continue),
                    Some(e) => {
                        // From now on, before every instruction of this thread
                        // (and of coroutines it creates): `pcall` cannot swallow this.
                        budget.set_hook(lua, 1)?;
                        Err(mlua::Error::external(e))
                    }
                }
            },
        )
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

    fn end(&self, lua: &Lua) {
        self.pause();
        let switched = {
            let mut m = self.meter.lock();
            m.callback = None;
            m.exceeded.is_some()
        };
        if switched {
            // Back to the cheap hook for whatever runs next (the VM's closing).
            let _ = self.set_hook(lua, CHECK_EVERY);
        }
    }

    /// Runs the callback future `fut` named `callback`, counting only the time
    /// it spends being polled.
    pub async fn metered<T>(&self, lua: &Lua, callback: &str, fut: impl Future<Output = T>) -> T {
        self.begin(callback);
        let mut fut = std::pin::pin!(fut);
        let out = std::future::poll_fn(|cx| {
            self.resume();
            let polled = fut.as_mut().poll(cx);
            self.pause();
            polled
        })
        .await;
        self.end(lua);
        out
    }

    /// Runs the synchronous callback `f` named `callback` under the budget.
    pub fn metered_sync<T>(&self, lua: &Lua, callback: &str, f: impl FnOnce() -> T) -> T {
        self.begin(callback);
        self.resume();
        let out = f();
        self.end(lua);
        out
    }
}
