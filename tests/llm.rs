//! Integration tests of LLM access: the client (`orrery::llm`) against a real
//! local HTTP server (wiremock), the offline mock and replay answerers, the
//! token budget, the concurrency limit and key redaction; then `llm.chat` from
//! Lua end to end (`lua_*`): scripts run by the orchestrator in-process or by
//! the binary, the default agents' use of the LLM, and the LLM settings.
//!
//! One test binary; each concern is a module under `tests/llm/` (named with
//! `#[path]`, since a test crate's root resolves `mod` beside itself).

mod common;
#[path = "llm/config.rs"]
mod config;
#[path = "llm/limits.rs"]
mod limits;
#[path = "llm/live.rs"]
mod live;
#[path = "llm/lua_agents.rs"]
mod lua_agents;
#[path = "llm/lua_budget.rs"]
mod lua_budget;
#[path = "llm/lua_chat.rs"]
mod lua_chat;
#[path = "llm/lua_replay.rs"]
mod lua_replay;
#[path = "llm/lua_secrets.rs"]
mod lua_secrets;
#[path = "llm/lua_settings.rs"]
mod lua_settings;
#[path = "llm/mock.rs"]
mod mock;
#[path = "llm/redaction.rs"]
mod redaction;
#[path = "llm/replay.rs"]
mod replay;
#[path = "llm/retries.rs"]
mod retries;
#[path = "llm/tls.rs"]
mod tls;
#[path = "llm/util.rs"]
mod util;
