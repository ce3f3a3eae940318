//! Integration tests of the LLM client (`crate::llm`): the live mode against a
//! real local HTTP server (wiremock), the offline mock and replay answerers,
//! the token budget, the concurrency limit and key redaction.
//!
//! One test binary; each concern is a module under `tests/llm/` (named with
//! `#[path]`, since a test crate's root resolves `mod` beside itself).

#[path = "llm/config.rs"]
mod config;
#[path = "llm/limits.rs"]
mod limits;
#[path = "llm/live.rs"]
mod live;
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
