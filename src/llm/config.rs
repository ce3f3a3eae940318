//! Where the LLM comes from: [`LlmConfig`] and the [`ApiKey`] it may carry.
//!
//! The CLI builds an `LlmConfig` from flags > environment > config file:
//! start from [`LlmConfig::default`] (or the file's values), overlay the
//! environment with [`LlmConfig::from_env_and`], then apply the flags.

use std::fmt;
use std::path::PathBuf;

use super::LlmError;

/// The model used when neither the config nor the request names one.
pub const DEFAULT_MODEL: &str = "anthropic/claude-sonnet-4";

/// Environment variables read for the API key, in order of precedence.
pub const API_KEY_VARS: [&str; 3] = ["ORRERY_LLM_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY"];

/// An API key. It prints as `ApiKey(***)` in both `Debug` and `Display`, is
/// not serializable, and only the client itself can read it back, so it
/// cannot leak into logs, metrics or Lua.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key. Surrounding whitespace (a newline from `$(cat keyfile)`)
    /// is removed.
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into().trim().to_string())
    }

    /// The secret itself, for the `Authorization` header and for redaction.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key replaced by `***`.
    pub(crate) fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            return text.to_string();
        }
        text.replace(&self.0, "***")
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Settings of an [`LlmClient`](super::LlmClient).
///
/// Which answerer is used follows from these fields; see
/// [`LlmClient::mode`](super::LlmClient::mode).
#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    /// Base URL of an OpenAI-compatible API, e.g. `https://openrouter.ai/api/v1`
    /// or `http://127.0.0.1:11434/v1`; calls go to `{url}/chat/completions`.
    /// `None` (the default) means the offline mock responder answers.
    pub url: Option<String>,
    /// Model used when a request names none. Default [`DEFAULT_MODEL`].
    pub model: String,
    /// Sent as `Authorization: Bearer <key>` when present. A URL without a key
    /// is fine (local Ollama or llama.cpp servers need none).
    pub api_key: Option<ApiKey>,
    /// Per-call timeout in milliseconds, covering the wait for a concurrency
    /// slot, every attempt and every backoff. Default 60000.
    pub timeout_ms: u64,
    /// Retries after the first attempt on HTTP 429, 5xx and connection errors.
    /// Default 3.
    pub max_retries: u32,
    /// First backoff in milliseconds; doubles each retry, capped at 30 s, with
    /// a little jitter. A `Retry-After` header takes its place. Default 500.
    pub backoff_base_ms: u64,
    /// Concurrent calls to the endpoint host. Default 4.
    pub max_concurrent: usize,
    /// Force the offline deterministic responder, whatever else is set.
    pub mock: bool,
    /// Answer from the recorded request/response pairs in this JSON Lines
    /// file instead of calling the endpoint (see [`super::replay`]).
    pub replay: Option<PathBuf>,
    /// Tokens one task may spend; once the running total reaches it, the next
    /// call fails with [`LlmError::BudgetExhausted`]. `None`: no limit.
    pub token_budget: Option<u64>,
}

impl Default for LlmConfig {
    fn default() -> LlmConfig {
        LlmConfig {
            url: None,
            model: DEFAULT_MODEL.to_string(),
            api_key: None,
            timeout_ms: 60_000,
            max_retries: 3,
            backoff_base_ms: 500,
            max_concurrent: 4,
            mock: false,
            replay: None,
            token_budget: None,
        }
    }
}

impl LlmConfig {
    /// The first non-empty of `ORRERY_LLM_KEY`, `OPENAI_API_KEY`,
    /// `OPENROUTER_API_KEY` in the process environment.
    pub fn api_key_from_env() -> Option<ApiKey> {
        LlmConfig::api_key_from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`LlmConfig::api_key_from_env`], reading variables through `vars`
    /// (for tests, or a CLI that gathers the environment itself).
    pub fn api_key_from_vars(vars: impl Fn(&str) -> Option<String>) -> Option<ApiKey> {
        API_KEY_VARS
            .iter()
            .filter_map(|name| non_empty(vars(name)))
            .map(ApiKey::new)
            .next()
    }

    /// `base` with every setting given in the process environment replacing
    /// its value. Variables (empty ones count as unset):
    /// `ORRERY_LLM_URL`, `ORRERY_LLM_MODEL`, the key variables of
    /// [`API_KEY_VARS`], `ORRERY_LLM_TIMEOUT_MS`, `ORRERY_LLM_MAX_RETRIES`,
    /// `ORRERY_LLM_BACKOFF_MS`, `ORRERY_LLM_MAX_CONCURRENT`, `ORRERY_LLM_MOCK`
    /// (`1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`), `ORRERY_LLM_REPLAY`,
    /// `ORRERY_LLM_TOKEN_BUDGET`.
    ///
    /// Fails with [`LlmError::Config`] naming the variable whose value does
    /// not parse.
    pub fn from_env_and(base: LlmConfig) -> Result<LlmConfig, LlmError> {
        LlmConfig::from_vars_and(base, |name| std::env::var(name).ok())
    }

    /// Like [`LlmConfig::from_env_and`], reading variables through `vars`.
    pub fn from_vars_and(
        base: LlmConfig,
        vars: impl Fn(&str) -> Option<String>,
    ) -> Result<LlmConfig, LlmError> {
        let get = |name: &str| non_empty(vars(name));
        let mut cfg = base;
        if let Some(url) = get("ORRERY_LLM_URL") {
            cfg.url = Some(url);
        }
        if let Some(model) = get("ORRERY_LLM_MODEL") {
            cfg.model = model;
        }
        if let Some(key) = LlmConfig::api_key_from_vars(&vars) {
            cfg.api_key = Some(key);
        }
        if let Some(v) = get("ORRERY_LLM_TIMEOUT_MS") {
            cfg.timeout_ms = parse_var("ORRERY_LLM_TIMEOUT_MS", &v)?;
        }
        if let Some(v) = get("ORRERY_LLM_MAX_RETRIES") {
            cfg.max_retries = parse_var("ORRERY_LLM_MAX_RETRIES", &v)?;
        }
        if let Some(v) = get("ORRERY_LLM_BACKOFF_MS") {
            cfg.backoff_base_ms = parse_var("ORRERY_LLM_BACKOFF_MS", &v)?;
        }
        if let Some(v) = get("ORRERY_LLM_MAX_CONCURRENT") {
            cfg.max_concurrent = parse_var("ORRERY_LLM_MAX_CONCURRENT", &v)?;
        }
        if let Some(v) = get("ORRERY_LLM_MOCK") {
            cfg.mock = parse_bool("ORRERY_LLM_MOCK", &v)?;
        }
        if let Some(path) = get("ORRERY_LLM_REPLAY") {
            cfg.replay = Some(PathBuf::from(path));
        }
        if let Some(v) = get("ORRERY_LLM_TOKEN_BUDGET") {
            cfg.token_budget = Some(parse_var("ORRERY_LLM_TOKEN_BUDGET", &v)?);
        }
        Ok(cfg)
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn parse_var<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, LlmError> {
    value.parse().map_err(|_| {
        LlmError::config(format!(
            "{name}={value:?} is not a valid non-negative whole number"
        ))
    })
}

fn parse_bool(name: &str, value: &str) -> Result<bool, LlmError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(LlmError::config(format!(
            "{name}={value:?} is not a boolean (use 1/true/yes/on or 0/false/no/off)"
        ))),
    }
}
