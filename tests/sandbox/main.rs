//! Integration tests of the sandbox: escape attempts, budgets (time, memory,
//! size), panics in host code, key confinement, capabilities, and bad input
//! through the real binary. Each test feeds one bad thing and asserts the
//! error and that the rest of the task (other agents, stored state) is intact.
//! `hostile/` is the hostile-script suite (the real binary, case by case),
//! `audit` the reachability audit, `rss` the host's memory under attack.
//!
//! One test binary; each concern is a module beside this file.

use orrery_test_support as common;

mod audit;
mod bad_input;
mod budgets;
mod capabilities;
mod coroutines;
mod escapes;
mod exec_group;
mod hostile;
mod keys;
mod memory;
mod panics;
mod patterns;
mod props;
mod rss;
mod sizes;
mod top_level;
mod util;
