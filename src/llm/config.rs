//! Where the LLM comes from: [`LlmConfig`] and the [`ApiKey`] it may carry.
//!
//! The host builds an `LlmConfig` from flags > environment > config file:
//! each of those is an [`LlmSettings`] layer applied over
//! [`LlmConfig::default`] in turn; the API key comes from the environment
//! only ([`LlmConfig::with_env_key`]). [`LlmConfig::from_env_and`] does the
//! environment part in one step.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
///
/// It serializes without its key, so a resolved configuration can be shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlmConfig {
    /// Base URL of an OpenAI-compatible API, e.g. `https://openrouter.ai/api/v1`
    /// or `http://127.0.0.1:11434/v1`; calls go to `{url}/chat/completions`.
    /// `None` (the default) means the offline mock responder answers.
    pub url: Option<String>,
    /// Model used when a request names none. Default [`DEFAULT_MODEL`].
    pub model: String,
    /// Sent as `Authorization: Bearer <key>` when present. A URL without a key
    /// is fine (local Ollama or llama.cpp servers need none).
    #[serde(skip)]
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
    /// Append every answered call (live or mock; not replayed ones) to this
    /// JSON Lines file in the replay format, so a run can be replayed later.
    pub record: Option<PathBuf>,
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
            record: None,
        }
    }
}

/// Where requests go when the key came from a service's own variable and
/// no URL is configured: the variable names the service unambiguously.
pub const KNOWN_ENDPOINTS: [(&str, &str); 2] = [
    ("OPENAI_API_KEY", "https://api.openai.com/v1"),
    ("OPENROUTER_API_KEY", "https://openrouter.ai/api/v1"),
];

impl LlmConfig {
    /// The first non-empty of `ORRERY_LLM_KEY`, `OPENAI_API_KEY`,
    /// `OPENROUTER_API_KEY` in the process environment.
    pub fn api_key_from_env() -> Option<ApiKey> {
        LlmConfig::api_key_from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`LlmConfig::api_key_from_env`], reading variables through `vars`
    /// (for tests, or a CLI that gathers the environment itself).
    pub fn api_key_from_vars(vars: impl Fn(&str) -> Option<String>) -> Option<ApiKey> {
        key_var(&vars).map(|(_, key)| key)
    }

    /// `self` with the API key of the process environment; see
    /// [`LlmConfig::with_key_from_vars`].
    pub fn with_env_key(self) -> LlmConfig {
        self.with_key_from_vars(|name| std::env::var(name).ok())
    }

    /// `self` with the API key read through `vars` ([`API_KEY_VARS`], first
    /// non-empty wins; none found leaves the key as it is). When no URL is
    /// set and the key came from `OPENAI_API_KEY` or `OPENROUTER_API_KEY`,
    /// the URL becomes that service's endpoint ([`KNOWN_ENDPOINTS`]), so a
    /// key alone is enough to go live; a key from `ORRERY_LLM_KEY` names no
    /// service and needs a URL.
    pub fn with_key_from_vars(self, vars: impl Fn(&str) -> Option<String>) -> LlmConfig {
        match key_var(&vars) {
            Some((var, key)) => self.with_key(var, key),
            None => self,
        }
    }

    /// `self` with `key`, read from the variable `var`: when no URL is set
    /// and `var` names a service ([`KNOWN_ENDPOINTS`]), the URL becomes that
    /// service's endpoint.
    pub fn with_key(mut self, var: &str, key: ApiKey) -> LlmConfig {
        self.api_key = Some(key);
        if self.url.is_none() {
            self.url = KNOWN_ENDPOINTS
                .iter()
                .find(|(name, _)| *name == var)
                .map(|(_, url)| url.to_string());
        }
        self
    }

    /// `base` with every setting given in the process environment replacing
    /// its value: the variables of [`LlmSettings::from_vars`], then the key
    /// as [`LlmConfig::with_key_from_vars`] reads it.
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
        let mut cfg = base;
        LlmSettings::from_vars(&vars)?.apply_to(&mut cfg);
        Ok(cfg.with_key_from_vars(vars))
    }
}

/// One layer of LLM settings: the `[llm]` table of a config file, the
/// environment, or the command line. Set fields replace the value of the
/// layer below ([`LlmSettings::apply_to`]).
///
/// There is deliberately no key here: the API key is read from the
/// environment only ([`LlmConfig::with_env_key`]), so it never sits in a
/// config file that gets committed or in a shell history.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSettings {
    /// [`LlmConfig::url`].
    pub url: Option<String>,
    /// [`LlmConfig::model`].
    pub model: Option<String>,
    /// [`LlmConfig::timeout_ms`].
    pub timeout_ms: Option<u64>,
    /// [`LlmConfig::max_retries`].
    pub max_retries: Option<u32>,
    /// [`LlmConfig::backoff_base_ms`].
    pub backoff_ms: Option<u64>,
    /// [`LlmConfig::max_concurrent`].
    pub max_concurrent: Option<usize>,
    /// [`LlmConfig::mock`].
    pub mock: Option<bool>,
    /// [`LlmConfig::replay`].
    pub replay: Option<PathBuf>,
    /// [`LlmConfig::record`].
    pub record: Option<PathBuf>,
    /// [`LlmConfig::token_budget`].
    pub token_budget: Option<u64>,
}

impl LlmSettings {
    /// The settings given by environment variables (empty ones count as
    /// unset): `ORRERY_LLM_URL`, `ORRERY_LLM_MODEL`, `ORRERY_LLM_TIMEOUT_MS`,
    /// `ORRERY_LLM_MAX_RETRIES`, `ORRERY_LLM_BACKOFF_MS`,
    /// `ORRERY_LLM_MAX_CONCURRENT`, `ORRERY_LLM_MOCK`
    /// (`1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`), `ORRERY_LLM_REPLAY`,
    /// `ORRERY_LLM_RECORD`, `ORRERY_LLM_TOKEN_BUDGET`.
    ///
    /// Fails with [`LlmError::Config`] naming the variable whose value does
    /// not parse.
    pub fn from_vars(vars: impl Fn(&str) -> Option<String>) -> Result<LlmSettings, LlmError> {
        let get = |name: &str| non_empty(vars(name));
        Ok(LlmSettings {
            url: get("ORRERY_LLM_URL"),
            model: get("ORRERY_LLM_MODEL"),
            timeout_ms: parse_opt(get, "ORRERY_LLM_TIMEOUT_MS")?,
            max_retries: parse_opt(get, "ORRERY_LLM_MAX_RETRIES")?,
            backoff_ms: parse_opt(get, "ORRERY_LLM_BACKOFF_MS")?,
            max_concurrent: parse_opt(get, "ORRERY_LLM_MAX_CONCURRENT")?,
            mock: get("ORRERY_LLM_MOCK")
                .map(|v| parse_bool("ORRERY_LLM_MOCK", &v))
                .transpose()?,
            replay: get("ORRERY_LLM_REPLAY").map(PathBuf::from),
            record: get("ORRERY_LLM_RECORD").map(PathBuf::from),
            token_budget: parse_opt(get, "ORRERY_LLM_TOKEN_BUDGET")?,
        })
    }

    /// Writes every set field into `cfg`.
    pub fn apply_to(&self, cfg: &mut LlmConfig) {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *target = v.clone();
            }
        }
        set(&mut cfg.model, &self.model);
        set(&mut cfg.timeout_ms, &self.timeout_ms);
        set(&mut cfg.max_retries, &self.max_retries);
        set(&mut cfg.backoff_base_ms, &self.backoff_ms);
        set(&mut cfg.max_concurrent, &self.max_concurrent);
        set(&mut cfg.mock, &self.mock);
        // Settings that are themselves optional: a layer can set, not unset.
        cfg.url = self.url.clone().or(cfg.url.take());
        cfg.replay = self.replay.clone().or(cfg.replay.take());
        cfg.record = self.record.clone().or(cfg.record.take());
        cfg.token_budget = self.token_budget.or(cfg.token_budget);
    }
}

/// The first key variable with a non-empty value, and the key.
fn key_var(vars: &impl Fn(&str) -> Option<String>) -> Option<(&'static str, ApiKey)> {
    API_KEY_VARS
        .iter()
        .find_map(|name| non_empty(vars(name)).map(|v| (*name, ApiKey::new(v))))
}

fn non_empty(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The variable `name` parsed as a number, when it is set.
fn parse_opt<T: std::str::FromStr>(
    get: impl Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<T>, LlmError> {
    get(name).map(|v| parse_var(name, &v)).transpose()
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
