//! Integration tests of the host itself (issue one): real Lua scripts driven
//! through every primitive of the API — blackboard, bus, state, spawn, lock,
//! metrics — on every store, plus the `orrery` binary's reports, errors and
//! exit codes, and a smoke run of `orrery bench`.
//!
//! One test binary; each concern is a module beside this file.

use orrery_test_support as common;

mod annotations;
mod bad_input;
mod bench;
mod blackboard;
mod bus;
mod config;
mod conventions;
mod deploy;
mod embedded_time;
mod harness;
mod lifecycle;
mod lock;
mod outcomes;
mod requests;
mod script_errors;
mod spawn;
mod spread;
mod state;
mod stdlib_check;
mod timeout;
mod timers;
mod util;
