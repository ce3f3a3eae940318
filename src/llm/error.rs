//! The one error type of the LLM client, [`LlmError`].
//!
//! Every message names the endpoint, file or setting at fault and is built from
//! text that already went through [`LlmClient::redact`](super::LlmClient::redact),
//! so neither `Display` nor `Debug` of an error can show the API key.

use std::path::{Path, PathBuf};

/// Why an LLM call (or building the client) failed.
///
/// Match on the variant, or use [`LlmError::kind`] for a stable short name
/// (what the Lua API hands to scripts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// The call did not finish within its timeout (`timeout_ms` of the request
    /// or of the config). `attempts` is how many HTTP requests were started;
    /// 0 means the call never got a free concurrent-call slot.
    #[error("{}", timeout_message(url, *timeout_ms, *attempts))]
    Timeout {
        /// Endpoint that was being called.
        url: String,
        /// The timeout that ran out, in milliseconds.
        timeout_ms: u64,
        /// HTTP requests started before the time ran out.
        attempts: u32,
    },

    /// The endpoint kept answering HTTP 429 until the retries ran out (or its
    /// `Retry-After` lay beyond the call's timeout).
    #[error("{}", rate_limited_message(url, *attempts, *retry_after_ms))]
    RateLimited {
        /// Endpoint that was being called.
        url: String,
        /// HTTP requests made.
        attempts: u32,
        /// The last `Retry-After` the endpoint asked for, in milliseconds.
        retry_after_ms: Option<u64>,
    },

    /// The endpoint answered with an HTTP error status (`status` is `Some`),
    /// or could not be reached at all (`status` is `None`: connection refused,
    /// DNS failure, connection reset...). 5xx and connection errors are
    /// reported once the retries are spent; other 4xx at once.
    #[error("{}", http_message(url, *status, *attempts, detail))]
    Http {
        /// Endpoint that was being called.
        url: String,
        /// The HTTP status, or `None` when no response arrived.
        status: Option<u16>,
        /// HTTP requests made.
        attempts: u32,
        /// A short, redacted excerpt of the response body or the transport error.
        detail: String,
    },

    /// The endpoint answered 2xx with a body that is not an OpenAI-style
    /// chat completion.
    #[error("malformed answer from {url}: {detail}; body starts: {excerpt:?}")]
    Malformed {
        /// Endpoint that was being called.
        url: String,
        /// What was wrong with it.
        detail: String,
        /// The first 200 characters of the body, redacted.
        excerpt: String,
    },

    /// The task's token budget is spent; no request was sent.
    #[error("LLM token budget exhausted: {used} of {budget} tokens used; no request was sent")]
    BudgetExhausted {
        /// Tokens counted so far (prompt + completion of every answer).
        used: u64,
        /// The configured `token_budget`.
        budget: u64,
    },

    /// A setting or a request is unusable (bad URL, bad environment variable,
    /// empty message list...).
    #[error("LLM configuration: {message}")]
    Config {
        /// What is wrong, naming the setting or variable.
        message: String,
    },

    /// The replay file could not be read, has a bad line (`line` is `Some`),
    /// or holds no answer for a request (`line` is `None`).
    #[error("{}", replay_message(path, *line, message))]
    Replay {
        /// The replay file.
        path: PathBuf,
        /// 1-based line of the bad entry, when the problem is a line.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
}

impl LlmError {
    /// A stable short name for the error: `"timeout"`, `"rate_limited"`,
    /// `"http"`, `"malformed"`, `"budget"`, `"config"` or `"replay"`.
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::Timeout { .. } => "timeout",
            LlmError::RateLimited { .. } => "rate_limited",
            LlmError::Http { .. } => "http",
            LlmError::Malformed { .. } => "malformed",
            LlmError::BudgetExhausted { .. } => "budget",
            LlmError::Config { .. } => "config",
            LlmError::Replay { .. } => "replay",
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> LlmError {
        LlmError::Config {
            message: message.into(),
        }
    }

    /// A [`LlmError::Replay`] about `path` (at `line` when a line is at fault).
    pub fn replay(path: &Path, line: Option<usize>, message: impl Into<String>) -> LlmError {
        LlmError::Replay {
            path: path.to_path_buf(),
            line,
            message: message.into(),
        }
    }
}

fn timeout_message(url: &str, timeout_ms: u64, attempts: u32) -> String {
    if attempts == 0 {
        format!(
            "LLM call to {url} timed out after {timeout_ms} ms waiting for a free concurrent-call slot (see max_concurrent)"
        )
    } else {
        format!(
            "LLM call to {url} timed out after {timeout_ms} ms ({})",
            crate::text::plural(attempts, "attempt", "attempts")
        )
    }
}

fn rate_limited_message(url: &str, attempts: u32, retry_after_ms: Option<u64>) -> String {
    let mut text = format!(
        "LLM endpoint {url} is rate limiting (HTTP 429) after {}",
        crate::text::plural(attempts, "attempt", "attempts")
    );
    if let Some(ms) = retry_after_ms {
        text.push_str(&format!("; it asked to retry after {ms} ms"));
    }
    text
}

fn http_message(url: &str, status: Option<u16>, attempts: u32, detail: &str) -> String {
    match status {
        Some(code) => {
            format!(
                "LLM endpoint {url} answered HTTP {code} after {}: {detail}",
                crate::text::plural(attempts, "attempt", "attempts")
            )
        }
        None => format!(
            "could not reach LLM endpoint {url} after {}: {detail}",
            crate::text::plural(attempts, "attempt", "attempts")
        ),
    }
}

fn replay_message(path: &Path, line: Option<usize>, message: &str) -> String {
    match line {
        Some(n) => format!("replay file {}:{n}: {message}", path.display()),
        None => format!("replay file {}: {message}", path.display()),
    }
}
