//! Integration tests of LLM access: the client (`orrery::llm`) against a real
//! local HTTP server (wiremock), the offline mock and replay answerers, the
//! token budget, the concurrency limit and key redaction; then `llm.chat` from
//! Lua end to end (`lua_*`): scripts run by the orchestrator in-process or by
//! the binary, the default agents' use of the LLM, and the LLM settings.
//!
//! One test binary; each concern is a module beside this file.

use orrery_test_support as common;
mod config;
mod limits;
mod live;
mod lua_agents;
mod lua_budget;
mod lua_chat;
mod lua_replay;
mod lua_secrets;
mod lua_settings;
mod mock;
mod redaction;
mod replay;
mod retries;
mod tls;
mod util;
