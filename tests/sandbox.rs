//! Integration tests of the sandbox: escape attempts, budgets (time, memory,
//! size), panics in host code, key confinement, capabilities, and bad input
//! through the real binary. Each test feeds one bad thing and asserts the
//! error and that the rest of the task (other agents, stored state) is intact.
//!
//! One test binary; each concern is a module under `tests/sandbox/`.

#[path = "common/mod.rs"]
mod common;

#[path = "sandbox/bad_input.rs"]
mod bad_input;
#[path = "sandbox/budgets.rs"]
mod budgets;
#[path = "sandbox/capabilities.rs"]
mod capabilities;
#[path = "sandbox/escapes.rs"]
mod escapes;
#[path = "sandbox/keys.rs"]
mod keys;
#[path = "sandbox/memory.rs"]
mod memory;
#[path = "sandbox/panics.rs"]
mod panics;
#[path = "sandbox/patterns.rs"]
mod patterns;
#[path = "sandbox/props.rs"]
mod props;
#[path = "sandbox/sizes.rs"]
mod sizes;
#[path = "sandbox/util.rs"]
mod util;
