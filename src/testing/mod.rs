//! `orrery test`: agent tests written in Lua, offline and deterministic.
//!
//! Each spec file (`*_spec.lua`) runs in a fresh VM made by the agent VM
//! builder, so it has the sandbox and the host API of an agent, plus the
//! harness (`describe`, `it`, `before_each`, `after_each`, `pending`,
//! luassert-like `assert`, `spy`) and the fixtures of the `test` table.
//! Every test gets a world of its own ([`world`]): a task on a fresh embedded
//! store, held open by an orchestrator, in which the spec is the agent
//! `test-1` and starts the roles under test; the clock is tokio's, paused,
//! so `sleep`, `now`, timers and timeouts follow test time; the LLM answers
//! only what the test scripted ([`answers`]).

pub mod answers;
pub mod fixtures;
pub mod output;
pub mod runner;
pub mod setup;
pub mod world;

pub use output::{Totals, junit, summary, tap, totals};
pub use runner::{FileResult, Options, Outcome, TestResult, discover, run_file};
pub use world::Base;

/// A host error as a Lua error the spec can catch, keeping its kind.
pub(crate) fn host_err(e: crate::Error) -> mlua::Error {
    mlua::Error::external(e)
}
