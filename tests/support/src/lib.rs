//! What the integration tests of orrery share. Each suite
//! (`tests/<suite>/main.rs`) imports it as `common`
//! (`use orrery_test_support as common;`):
//!
//! - [`orrery_command`]: the one builder of `orrery` commands, with every
//!   variable that changes what the binary does removed, so a developer's
//!   environment (an `OPENAI_API_KEY`, an `ORRERY_STORE`) never changes a
//!   test; [`orrery`], [`orrery_env`] and [`spawn_orrery`] run it;
//! - [`Scratch`]: a temporary directory of scripts; [`task`]: a small task;
//! - [`run_in_process`]: a task run by the library on either [`Backend`];
//! - [`RedisServer`]: a real `redis-server` that is checked to be the test's
//!   own child before any test talks to it, and killed on drop;
//! - [`closed_port`]: a port on which connections are refused;
//! - [`http_get`] and [`addr_in`]: a plain GET of what `orrery` serves, at
//!   the address it printed.
#![warn(missing_docs)]

mod binary;
mod http;
mod redis;
mod scratch;

pub use binary::{
    Finished, Running, orrery, orrery_bin, orrery_command, orrery_env, show, spawn_orrery,
};
pub use http::{addr_in, http_get};
pub use redis::{RedisServer, closed_port};
pub use scratch::{Backend, Scratch, repo, run_in_process, task};
