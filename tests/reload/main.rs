//! Integration tests of hot reload (`orrery run --watch`): real tasks whose
//! scripts are rewritten on disk while they run, observed through the agents'
//! messages and blackboard writes and the reloader's events — never sleeps.
//!
//! One test binary; each concern is a module beside this file.

use orrery_test_support as common;

mod bench;
mod cli;
mod example;
mod files;
mod interrupts;
mod long_running;
mod modules;
mod roles;
mod roots;
mod session;
