//! [`LlmClient`]: the one handle the host uses for LLM calls. It picks the
//! answerer (live endpoint, mock or replay), enforces the token budget and
//! keeps the usage totals.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::live::LiveEndpoint;
use super::replay::{Recorder, ReplayBook};
use super::usage::Ledger;
use super::{ApiKey, ChatRequest, ChatResponse, LlmConfig, LlmError, LlmMode, UsageReport, mock};

/// A cheap-to-clone handle for LLM calls (`Arc` inside; `Send + Sync`).
///
/// Clones share everything: the HTTP connection pool, the concurrency limit,
/// the replay entries, the usage totals and the token budget. Use
/// [`LlmClient::for_task`] for a handle with its own totals and budget.
#[derive(Clone)]
pub struct LlmClient {
    shared: Arc<Shared>,
    ledger: Arc<Ledger>,
}

/// What every task's handle shares.
struct Shared {
    mode: LlmMode,
    model: String,
    timeout_ms: u64,
    key: Option<ApiKey>,
    live: Option<LiveEndpoint>,
    replay: Option<ReplayBook>,
    recorder: Option<Recorder>,
    answerer: Option<Arc<dyn Answerer>>,
}

/// Answers calls in place of an endpoint: what `orrery test` scripts.
pub trait Answerer: Send + Sync {
    /// The answer to `req` asked of `model`, or the error the call fails with.
    fn answer(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse, LlmError>;
}

impl LlmClient {
    /// A client for `cfg`. The mode is, in order: [`LlmMode::Mock`] when
    /// `cfg.mock`; [`LlmMode::Replay`] when `cfg.replay` names a file;
    /// [`LlmMode::Live`] when `cfg.url` is set (a key is optional); otherwise
    /// `Mock` (an API key without a URL is not enough: the client does not
    /// guess the endpoint).
    ///
    /// Fails with [`LlmError::Config`] for an unusable URL, `timeout_ms` 0,
    /// `max_concurrent` 0 or a record file that can't be opened, and with
    /// [`LlmError::Replay`] when the replay file can't be read or has a bad
    /// line (naming `file:line`). A record file is ignored in replay mode.
    pub fn new(cfg: LlmConfig) -> Result<LlmClient, LlmError> {
        if cfg.timeout_ms == 0 {
            return Err(LlmError::config("timeout_ms must be at least 1"));
        }
        let mode = match (&cfg.replay, &cfg.url) {
            _ if cfg.mock => LlmMode::Mock,
            (Some(_), _) => LlmMode::Replay,
            (None, Some(_)) => LlmMode::Live,
            (None, None) => LlmMode::Mock,
        };
        if mode == LlmMode::Mock && !cfg.mock && cfg.api_key.is_some() {
            tracing::info!(
                "an LLM API key is set but no LLM url; using the offline mock responder"
            );
        }
        let live = match (&cfg.url, mode) {
            (Some(url), LlmMode::Live) => Some(LiveEndpoint::new(url, &cfg)?),
            _ => None,
        };
        let replay = match (&cfg.replay, mode) {
            (Some(path), LlmMode::Replay) => Some(ReplayBook::load(path)?),
            _ => None,
        };
        let recorder = match (&cfg.record, mode) {
            (Some(path), LlmMode::Live | LlmMode::Mock) => Some(Recorder::open(path)?),
            _ => None,
        };
        let shared = Shared {
            mode,
            model: cfg.model,
            timeout_ms: cfg.timeout_ms,
            key: cfg.api_key,
            live,
            replay,
            recorder,
            answerer: None,
        };
        Ok(LlmClient {
            shared: Arc::new(shared),
            ledger: Arc::new(Ledger::new(cfg.token_budget)),
        })
    }

    /// A client whose every call is answered by `answerer` (no network, no
    /// file), reporting `model` when a request names none. `available` is
    /// what scripts see as `llm.available()`: false stands for a run with
    /// no LLM configured ([`LlmMode::Mock`]), true for a real one
    /// ([`LlmMode::Replay`]).
    pub fn with_answerer(answerer: Arc<dyn Answerer>, model: &str, available: bool) -> LlmClient {
        let shared = Shared {
            mode: if available {
                LlmMode::Replay
            } else {
                LlmMode::Mock
            },
            model: model.to_string(),
            timeout_ms: 60_000,
            key: None,
            live: None,
            replay: None,
            recorder: None,
            answerer: Some(answerer),
        };
        LlmClient {
            shared: Arc::new(shared),
            ledger: Arc::new(Ledger::new(None)),
        }
    }

    /// A handle for another task: it shares this client's connection pool,
    /// concurrency limit and replay entries, and starts with zero usage and
    /// its own `token_budget`.
    pub fn for_task(&self, token_budget: Option<u64>) -> LlmClient {
        LlmClient {
            shared: Arc::clone(&self.shared),
            ledger: Arc::new(Ledger::new(token_budget)),
        }
    }

    /// Which answerer this client uses.
    pub fn mode(&self) -> LlmMode {
        self.shared.mode
    }

    /// `true` when a "real" answerer is configured ([`LlmMode::Live`] or
    /// [`LlmMode::Replay`]), `false` for the mock.
    pub fn is_live(&self) -> bool {
        self.shared.mode != LlmMode::Mock
    }

    /// The model used when a request names none.
    pub fn default_model(&self) -> &str {
        &self.shared.model
    }

    /// Answers `req` with the client's answerer.
    ///
    /// Errors: [`LlmError::BudgetExhausted`] once the token budget is spent
    /// (nothing is sent); [`LlmError::Config`] for a request without messages;
    /// in live mode `Timeout`, `RateLimited`, `Http` or `Malformed` (see the
    /// [`live`](super::live) module for retries and the timeout); in replay
    /// mode [`LlmError::Replay`] when no entry matches. Every message, and
    /// the answer's content and model, is redacted. A success adds its usage
    /// to the totals (and, with `record` set, a line to the record file); an
    /// error counts as a failed call.
    pub async fn chat(&self, req: ChatRequest) -> Result<ChatResponse, LlmError> {
        let model = req
            .model
            .clone()
            .unwrap_or_else(|| self.shared.model.clone());
        // A misbehaving endpoint could echo the key back in an answer: what
        // leaves the client is redacted like its errors are.
        let result = self.answer(&req, &model).await.map(|resp| ChatResponse {
            content: self.redact(&resp.content),
            model: self.redact(&resp.model),
            ..resp
        });
        match &result {
            Ok(resp) => {
                self.ledger.record_success(&model, &resp.usage);
                if let Some(recorder) = &self.shared.recorder {
                    recorder.write(&req, resp);
                }
                tracing::debug!(
                    source = resp.source,
                    model = %model,
                    tokens = resp.usage.total_tokens,
                    "LLM call answered"
                );
            }
            Err(err) => {
                self.ledger.record_failure();
                tracing::debug!(kind = err.kind(), model = %model, "LLM call failed: {err}");
            }
        }
        result
    }

    async fn answer(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse, LlmError> {
        self.ledger.check_budget()?;
        if req.messages.is_empty() {
            return Err(LlmError::config(
                "a chat request needs at least one message",
            ));
        }
        let shared = &self.shared;
        if let Some(answerer) = &shared.answerer {
            return answerer.answer(req, model);
        }
        match (shared.mode, &shared.live, &shared.replay) {
            (LlmMode::Live, Some(live), _) => {
                let timeout_ms = req.timeout_ms.unwrap_or(shared.timeout_ms).max(1);
                live.chat(req, model, Duration::from_millis(timeout_ms))
                    .await
            }
            (LlmMode::Replay, _, Some(book)) => book.answer(req, model),
            _ => Ok(mock::answer(req, model)),
        }
    }

    /// Totals of this client's (this task's) successful calls and tokens,
    /// overall and per model, plus the number of failed calls.
    pub fn usage(&self) -> UsageReport {
        self.ledger.report()
    }

    /// The answers `--llm-record` could not write (a full disk), and why;
    /// counted since the client was made (shared with its task handles).
    pub fn unrecorded(&self) -> Option<(u64, String)> {
        self.shared.recorder.as_ref().and_then(|r| r.unrecorded())
    }

    /// `text` with every occurrence of the API key replaced by `***`
    /// (unchanged when there is no key). The client already applies it to
    /// every error message and log line it produces.
    pub fn redact(&self, text: &str) -> String {
        match &self.shared.key {
            Some(key) => key.redact(text),
            None => text.to_string(),
        }
    }
}

impl fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmClient")
            .field("mode", &self.shared.mode)
            .field("model", &self.shared.model)
            .field("live", &self.shared.live)
            .field("replay", &self.shared.replay.as_ref().map(|_| "loaded"))
            .field("recorder", &self.shared.recorder)
            .field("api_key", &self.shared.key)
            .field("usage", &self.ledger.report())
            .finish()
    }
}
