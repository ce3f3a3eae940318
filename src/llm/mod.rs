//! LLM access for the host: one [`LlmClient`] answers `llm.chat{...}` calls
//! from agents with one of three answerers ([`LlmMode`]):
//!
//! - **live**: any OpenAI-compatible chat-completions endpoint
//!   ([`live`]: concurrency limit, retries with backoff, per-call timeout);
//! - **mock**: an offline deterministic responder ([`mock`]), used when no
//!   URL is configured or with `--mock`, so every example runs offline;
//! - **replay**: answers recorded in a JSON Lines file ([`replay`]).
//!
//! The API key stays in here: [`ApiKey`] never prints, and every error
//! message and log line is passed through [`LlmClient::redact`]. Token use is
//! totalled per model ([`UsageReport`]) and bounded by an optional per-task
//! budget.

mod client;
mod config;
mod error;
pub mod live;
pub mod mock;
pub mod replay;
pub use replay::ReplayBook;
mod retry;
mod task;
mod types;
mod usage;

pub use client::{Answerer, LlmClient};
pub use config::{API_KEY_VARS, ApiKey, DEFAULT_MODEL, KNOWN_ENDPOINTS, LlmConfig, LlmSettings};
pub use error::LlmError;
pub use replay::record_line;
pub use task::{BudgetSpent, TaskLlm};
pub use types::{ChatMessage, ChatRequest, ChatResponse, LlmMode, Usage, estimate_tokens};
pub use usage::{ModelUsage, UsageReport};
