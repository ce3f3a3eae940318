//! The live answerer: an OpenAI-compatible `POST {url}/chat/completions`
//! endpoint, with a concurrency limit, retries and a per-call deadline.
//!
//! # Timeout
//!
//! A call's timeout (`ChatRequest::timeout_ms`, else `LlmConfig::timeout_ms`)
//! bounds the whole call from the moment it reaches the endpoint: waiting for
//! a free concurrent-call slot, every attempt and every backoff. Running out
//! of it gives [`LlmError::Timeout`]. A retry whose wait would end past the
//! deadline is not attempted: the call then fails at once with the last
//! attempt's error (`RateLimited` or `Http`), which says more than a timeout.
//! Timeouts themselves are not retried.
//!
//! # TLS
//!
//! `https://` endpoints go through rustls with the `ring` crypto provider
//! (installed at client construction unless the program chose another) and
//! the platform's certificate store (on Linux the `ca-certificates` bundle).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::retry::{backoff, parse_retry_after};
use super::types::PartialUsage;
use super::{ApiKey, ChatMessage, ChatRequest, ChatResponse, LlmConfig, LlmError};

/// How much of a response body an error quotes, in characters.
const EXCERPT_CHARS: usize = 200;

/// Largest answer read from the endpoint; a larger one fails the call.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// One OpenAI-compatible endpoint and the policy for calling it.
pub(crate) struct LiveEndpoint {
    /// `{url}/chat/completions`, as shown in messages (redacted).
    shown_url: String,
    endpoint: reqwest::Url,
    http: reqwest::Client,
    key: Option<ApiKey>,
    /// Concurrent calls to this endpoint's host. Every clone of a client (and
    /// every [`LlmClient::for_task`](super::LlmClient::for_task) sibling)
    /// shares it.
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    max_retries: u32,
    backoff_base_ms: u64,
}

impl fmt::Debug for LiveEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveEndpoint")
            .field("url", &self.shown_url)
            .field("max_concurrent", &self.max_concurrent)
            .field("free_slots", &self.slots.available_permits())
            .field("max_retries", &self.max_retries)
            .field("backoff_base_ms", &self.backoff_base_ms)
            .finish()
    }
}

/// Why one attempt did not produce an answer.
enum Failure {
    RateLimited {
        retry_after: Option<Duration>,
    },
    Server {
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    },
    Unreachable {
        detail: String,
    },
    Client {
        status: u16,
        detail: String,
    },
    Unusable {
        message: String,
    },
}

impl Failure {
    fn retryable(&self) -> bool {
        matches!(
            self,
            Failure::RateLimited { .. } | Failure::Server { .. } | Failure::Unreachable { .. }
        )
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::RateLimited { retry_after } | Failure::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<ResponseFormat>,
}

#[derive(Serialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<PartialUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
}

/// Refuses an LLM URL that does not parse (saying why: a port out of
/// range, no host) or is not http(s), and one carrying credentials
/// (`http://user:password@host`): reqwest would send them as Basic auth,
/// and a URL is shown in logs, errors and the report, where the API key
/// never is. Credentials go in the key's variables or file, as the key does.
fn check_url(url: &str, redact: &dyn Fn(&str) -> String) -> Result<(), LlmError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| LlmError::config(format!("LLM url {:?} is not a URL: {e}", redact(url))))?;
    if !matches!(parsed.scheme(), "http" | "https") || !parsed.has_host() {
        return Err(LlmError::config(format!(
            "LLM url {:?} is not an http:// or https:// URL",
            redact(url)
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let mut shown = parsed.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        return Err(LlmError::config(format!(
            "LLM url {shown} carries credentials (user:password@): they would show in \
             logs and errors; give the key with ORRERY_LLM_KEY or ORRERY_LLM_KEY_FILE"
        )));
    }
    Ok(())
}

impl LiveEndpoint {
    /// An endpoint for `url` with `cfg`'s key and policy. Fails with
    /// [`LlmError::Config`] when the URL is not an absolute http(s) URL or
    /// `max_concurrent` is 0.
    pub(crate) fn new(url: &str, cfg: &LlmConfig) -> Result<LiveEndpoint, LlmError> {
        let key = cfg.api_key.clone();
        let redact = |t: &str| key.as_ref().map_or_else(|| t.to_string(), |k| k.redact(t));
        check_url(url, &redact)?;
        let joined = format!("{}/chat/completions", url.trim_end_matches('/'));
        let endpoint = reqwest::Url::parse(&joined)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                LlmError::config(format!(
                    "LLM url {:?} is not an http:// or https:// URL",
                    redact(url)
                ))
            })?;
        if cfg.max_concurrent == 0 {
            return Err(LlmError::config("max_concurrent must be at least 1"));
        }
        // No redirect is followed: the Authorization header would go with it
        // (reqwest keeps it on a same-origin hop, even after a cross-origin one).
        let http = crate::http_client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| LlmError::config(format!("cannot build the HTTP client: {e}")))?;
        Ok(LiveEndpoint {
            shown_url: redact(endpoint.as_str()),
            endpoint,
            http,
            key,
            slots: Arc::new(Semaphore::new(cfg.max_concurrent)),
            max_concurrent: cfg.max_concurrent,
            max_retries: cfg.max_retries,
            backoff_base_ms: cfg.backoff_base_ms,
        })
    }

    /// Asks the endpoint to answer `req` with `model`, within `timeout` (see
    /// the module docs), retrying 429, 5xx and connection errors.
    pub(crate) async fn chat(
        &self,
        req: &ChatRequest,
        model: &str,
        timeout: Duration,
    ) -> Result<ChatResponse, LlmError> {
        let deadline = Instant::now() + timeout;
        let timed_out = |attempts| LlmError::Timeout {
            url: self.shown_url.clone(),
            timeout_ms: timeout.as_millis() as u64,
            attempts,
        };
        let Ok(permit) = tokio::time::timeout_at(deadline, self.slots.acquire()).await else {
            return Err(timed_out(0));
        };
        // The semaphore lives as long as the endpoint and is never closed.
        let _permit = permit.expect("LLM slot semaphore is never closed");
        let body = WireRequest {
            model,
            messages: &req.messages,
            temperature: req.temperature,
            max_tokens: req.max_tokens,
            response_format: req.json.then_some(ResponseFormat {
                kind: "json_object",
            }),
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let Ok(outcome) = tokio::time::timeout_at(deadline, self.attempt(&body)).await else {
                return Err(timed_out(attempts));
            };
            let failure = match outcome {
                Ok(text) => return self.parse(&text, req, model),
                Err(failure) => failure,
            };
            if !failure.retryable() || attempts > self.max_retries {
                return Err(self.error(failure, attempts));
            }
            let wait = failure
                .retry_after()
                .unwrap_or_else(|| backoff(self.backoff_base_ms, attempts));
            if Instant::now() + wait >= deadline {
                return Err(self.error(failure, attempts));
            }
            tracing::warn!(
                url = %self.shown_url,
                attempt = attempts,
                wait_ms = wait.as_millis() as u64,
                "LLM call failed, retrying: {}",
                self.error(failure, attempts)
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One HTTP request; `Ok` carries the body of a 2xx answer.
    async fn attempt(&self, body: &WireRequest<'_>) -> Result<String, Failure> {
        let mut request = self.http.post(self.endpoint.clone()).json(body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_failure(&e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let text = self.body(response, status).await?;
        match status {
            200..=299 => Ok(text),
            300..=399 => Err(Failure::Client {
                status,
                detail: format!(
                    "the endpoint redirects{}; redirects are not followed, so the API key never goes elsewhere",
                    location
                        .map(|l| format!(" to {}", self.redact(&l)))
                        .unwrap_or_default()
                ),
            }),
            429 => Err(Failure::RateLimited { retry_after }),
            500..=599 => Err(Failure::Server {
                status,
                detail: self.excerpt(&text),
                retry_after,
            }),
            _ => Err(Failure::Client {
                status,
                detail: self.excerpt(&text),
            }),
        }
    }

    /// The body of `response` as text, at most [`MAX_BODY_BYTES`].
    async fn body(&self, mut response: reqwest::Response, status: u16) -> Result<String, Failure> {
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_failure(&e))?
        {
            if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(Failure::Client {
                    status,
                    detail: format!("the answer is larger than {MAX_BODY_BYTES} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn transport_failure(&self, err: &reqwest::Error) -> Failure {
        let detail = self.redact(&crate::http_client::failure_text(err));
        if err.is_builder() {
            return Failure::Unusable {
                message: format!("cannot call {}: {detail}", self.shown_url),
            };
        }
        Failure::Unreachable { detail }
    }

    fn parse(&self, text: &str, req: &ChatRequest, model: &str) -> Result<ChatResponse, LlmError> {
        let malformed = |detail: String| LlmError::Malformed {
            url: self.shown_url.clone(),
            detail: self.redact(&detail),
            excerpt: self.excerpt(text),
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| malformed(format!("not JSON ({e})")))?;
        // Some gateways (OpenRouter among them) answer 200 with an error
        // object instead of a completion; quote its message.
        if let (None, Some(error)) = (value.get("choices"), value.get("error")) {
            let message = error.get("message").unwrap_or(error);
            return Err(malformed(format!(
                "the endpoint returned an error: {message}"
            )));
        }
        let wire: WireResponse = serde_json::from_value(value)
            .map_err(|e| malformed(format!("not a chat completion ({e})")))?;
        let Some(choice) = wire.choices.into_iter().next() else {
            return Err(malformed("the answer has no choices".into()));
        };
        let Some(content) = choice.message.content else {
            return Err(malformed(
                "choices[0].message.content is missing or null".into(),
            ));
        };
        Ok(ChatResponse {
            // Endpoints that omit `usage` (some local servers) get the
            // characters / 4 estimate, so budgets still count something.
            usage: PartialUsage::complete(wire.usage, &req.messages, &content),
            model: wire.model.unwrap_or_else(|| model.to_string()),
            content,
            source: "api",
        })
    }

    fn error(&self, failure: Failure, attempts: u32) -> LlmError {
        let url = self.shown_url.clone();
        match failure {
            Failure::RateLimited { retry_after } => LlmError::RateLimited {
                url,
                attempts,
                retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
            },
            Failure::Server { status, detail, .. } | Failure::Client { status, detail } => {
                LlmError::Http {
                    url,
                    status: Some(status),
                    attempts,
                    detail,
                }
            }
            Failure::Unreachable { detail } => LlmError::Http {
                url,
                status: None,
                attempts,
                detail,
            },
            Failure::Unusable { message } => LlmError::Config { message },
        }
    }

    /// The start of a response body for an error message: redacted first (so
    /// a cut cannot leave part of the key), whitespace folded, then cut.
    fn excerpt(&self, body: &str) -> String {
        let redacted = self.redact(body);
        let folded = redacted.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut excerpt: String = folded.chars().take(EXCERPT_CHARS).collect();
        if folded.chars().count() > EXCERPT_CHARS {
            excerpt.push('…');
        }
        excerpt
    }

    pub(crate) fn redact(&self, text: &str) -> String {
        match &self.key {
            Some(key) => key.redact(text),
            None => text.to_string(),
        }
    }
}
