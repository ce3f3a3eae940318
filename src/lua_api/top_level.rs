//! A script's top level may not wait.
//!
//! The top level of a role script runs when the script loads: at every
//! spawn, at every reload, in the reload check and in `orrery check`; a
//! module's when it is first required. It runs as a plain call, outside
//! the coroutine an async host function suspends. So a call that had to
//! wait there failed with "attempt to yield from outside a coroutine" on
//! Redis, where every store call waits, and worked on the embedded store,
//! where the same call returns at once; and a call that acts before it
//! waits (`exec.run` starting its program, `fs.read` reading) acted even
//! in a check, whose top level is meant to change nothing.
//!
//! One rule on both stores instead: while a top level runs, every host
//! function that waits or may wait on some store (the store calls, the
//! bus, locks, spawns, `sleep`, `exec`, `fs`, `http`, `llm.chat`) raises
//! before doing anything, saying to call it from `start` or a handler.
//! What returns at once on every store stays allowed (`log`, `json`,
//! `now`, `every`/`after`, `bus.subscribe`, `spawn.when`, `metrics`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use mlua::Lua;

/// How many script top levels run in one agent's VM (a role script, and
/// the modules it requires while loading): shared by the VM (its app data,
/// for [`running`]) and the agent's context (for the host functions).
#[derive(Default)]
pub struct TopLevel(AtomicU32);

impl TopLevel {
    /// True while a script's top level runs.
    #[inline]
    pub fn active(&self) -> bool {
        self.0.load(Ordering::Relaxed) != 0
    }

    /// Fails while a script's top level runs: the first thing every host
    /// function that waits does.
    #[inline]
    pub fn refuse(&self) -> mlua::Result<()> {
        if self.active() {
            return Err(refusal());
        }
        Ok(())
    }
}

/// The error of a waiting host function called at a top level. The
/// function's name and the script's `path:line` go in front of it when it
/// is reported (see `error_text`).
fn refusal() -> mlua::Error {
    mlua::Error::external(
        "a script's top level may not wait: it runs when the script loads \
         (at every spawn and reload, and in orrery check), where the host cannot \
         suspend it; call this from start or a handler (or a function they call)",
    )
}

/// Makes `top_level` the VM's (see [`running`]).
pub(crate) fn install(lua: &Lua, top_level: Arc<TopLevel>) {
    lua.set_app_data(top_level);
}

/// Runs `f`, a script's top level, in `lua`: the VM's waiting host
/// functions refuse until it returns (whatever the VM, or nothing, when it
/// has no host API).
pub fn running<T>(lua: &Lua, f: impl FnOnce() -> T) -> T {
    let top_level = lua.app_data_ref::<Arc<TopLevel>>().map(|t| Arc::clone(&t));
    let Some(top_level) = top_level else {
        return f();
    };
    /// Ends the top level on every way out of `f`, unwinding included.
    struct Ends(Arc<TopLevel>);
    impl Drop for Ends {
        fn drop(&mut self) {
            self.0.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    top_level.0.fetch_add(1, Ordering::Relaxed);
    let _ends = Ends(top_level);
    f()
}
