//! orrery: a host for multi-agent systems written as Lua scripts.
//!
//! Layers, each depending only on the ones after it:
//! [`orchestrator`] → [`agent`] (one Lua VM per agent) → [`lua_api`] (one file
//! per Lua table) → [`coordination`] (blackboard, bus, states, spawning, locks,
//! metrics) → [`store`] (embedded or Redis). [`scripts`] holds the code agents run;
//! [`inspect`] reads what a task left in a shared store.
#![warn(missing_docs)]

#[macro_use]
mod text_enum;

pub mod agent;
pub mod bench;
pub mod capabilities;
pub mod check;
pub mod config;
pub mod coordination;
pub mod error;
pub(crate) mod fast_map;
pub mod fleet;
pub mod http_client;
pub mod inspect;
pub mod llm;
pub mod lua_api;
pub mod observe;
pub mod orchestrator;
pub mod reload;
pub mod report;
pub mod scripts;
pub mod secrets;
pub mod store;
pub mod task;
pub mod testing;
pub mod text;
pub mod trace;

pub use error::{Error, Result};
