//! Integration tests of hot reload (`orrery run --watch`): real tasks whose
//! scripts are rewritten on disk while they run, observed through the agents'
//! messages and blackboard writes and the reloader's events — never sleeps.
//!
//! One test binary; each concern is a module under `tests/reload/`.

#[path = "common/mod.rs"]
mod common;

#[path = "reload/bench.rs"]
mod bench;
#[path = "reload/cli.rs"]
mod cli;
#[path = "reload/files.rs"]
mod files;
#[path = "reload/modules.rs"]
mod modules;
#[path = "reload/roles.rs"]
mod roles;
#[path = "reload/session.rs"]
mod session;
