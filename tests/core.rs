//! Integration tests of the host itself (issue one): real Lua scripts driven
//! through every primitive of the API — blackboard, bus, state, spawn, lock,
//! metrics — on every store, plus the `orrery` binary's reports, errors and
//! exit codes, and a smoke run of `orrery bench`.
//!
//! One test binary; each concern is a module under `tests/core/` (named with
//! `#[path]`, since a test crate's root resolves `mod` beside itself).

#[path = "common/mod.rs"]
mod common;

#[path = "core/annotations.rs"]
mod annotations;
#[path = "core/bad_input.rs"]
mod bad_input;
#[path = "core/bench.rs"]
mod bench;
#[path = "core/blackboard.rs"]
mod blackboard;
#[path = "core/bus.rs"]
mod bus;
#[path = "core/config.rs"]
mod config;
#[path = "core/deploy.rs"]
mod deploy;
#[path = "core/lifecycle.rs"]
mod lifecycle;
#[path = "core/lock.rs"]
mod lock;
#[path = "core/script_errors.rs"]
mod script_errors;
#[path = "core/spawn.rs"]
mod spawn;
#[path = "core/state.rs"]
mod state;
#[path = "core/timeout.rs"]
mod timeout;
#[path = "core/util.rs"]
mod util;
