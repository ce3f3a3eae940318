//! The values that go in and out of a chat call: [`ChatRequest`],
//! [`ChatMessage`], [`ChatResponse`], [`Usage`] and the [`LlmMode`] that
//! answered.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One message of a conversation, as the OpenAI chat API spells it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `"system"`, `"user"`, `"assistant"` (any string is passed through).
    pub role: String,
    /// The text of the message.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `"system"` message.
    pub fn system(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("system", content)
    }

    /// A `"user"` message.
    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("user", content)
    }

    /// An `"assistant"` message.
    pub fn assistant(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("assistant", content)
    }
}

/// One chat call. Only `messages` is required; every `None` falls back to
/// the client's config (or to the endpoint's own default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    /// The conversation; must not be empty.
    pub messages: Vec<ChatMessage>,
    /// Model for this call; `None` uses [`LlmConfig::model`](super::LlmConfig::model).
    pub model: Option<String>,
    /// Sampling temperature, sent only when set.
    pub temperature: Option<f64>,
    /// Completion length limit, sent only when set.
    pub max_tokens: Option<u32>,
    /// Ask for a JSON object: sends `response_format: {"type": "json_object"}`.
    pub json: bool,
    /// Timeout of this call; `None` uses [`LlmConfig::timeout_ms`](super::LlmConfig::timeout_ms).
    pub timeout_ms: Option<u64>,
}

impl ChatRequest {
    /// A request with these messages and every option left to the config.
    pub fn new(messages: Vec<ChatMessage>) -> ChatRequest {
        ChatRequest {
            messages,
            ..ChatRequest::default()
        }
    }

    /// The content of the last `"user"` message, or of the last message when
    /// none is from the user; `""` for an empty conversation.
    pub fn last_user_text(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .or_else(|| self.messages.last())
            .map(|m| m.content.as_str())
            .unwrap_or("")
    }
}

/// Token counts of one answer (or a sum of answers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the request's messages.
    pub prompt_tokens: u64,
    /// Tokens of the answer.
    pub completion_tokens: u64,
    /// `prompt_tokens + completion_tokens` (as the endpoint reports it).
    pub total_tokens: u64,
}

impl Usage {
    /// A usage whose total is the sum of the two parts.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }

    /// An estimate for an answer whose source reported no usage:
    /// [`estimate_tokens`] of all messages' contents and of the answer.
    pub fn estimate(messages: &[ChatMessage], answer: &str) -> Usage {
        let prompt: String = messages.iter().map(|m| m.content.as_str()).collect();
        Usage::new(estimate_tokens(&prompt), estimate_tokens(answer))
    }
}

/// Rough token count of a text: characters / 4, at least 1. Used by the mock
/// responder, for replay entries without usage, and when an endpoint omits
/// `usage` from its answer.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64 / 4).max(1)
}

/// An answer to a [`ChatRequest`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatResponse {
    /// The answer text (`choices[0].message.content`).
    pub content: String,
    /// The model that answered, as the source reports it (the requested
    /// model when the source does not say).
    pub model: String,
    /// Token counts, reported or estimated.
    pub usage: Usage,
    /// Who answered: `"api"`, `"mock"` or `"replay"`.
    pub source: &'static str,
}

/// Which answerer a client uses; see [`LlmClient::mode`](super::LlmClient::mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LlmMode {
    /// Calls the configured OpenAI-compatible endpoint.
    Live,
    /// The offline deterministic responder.
    Mock,
    /// Answers from a replay file.
    Replay,
}

impl LlmMode {
    /// `"live"`, `"mock"` or `"replay"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LlmMode::Live => "live",
            LlmMode::Mock => "mock",
            LlmMode::Replay => "replay",
        }
    }
}

impl fmt::Display for LlmMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `usage` object as endpoints and replay files give it: any field may be
/// missing. [`PartialUsage::complete`] fills the gaps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartialUsage {
    #[serde(default)]
    pub(crate) prompt_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) completion_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) total_tokens: Option<u64>,
}

impl PartialUsage {
    /// A full [`Usage`]: missing token counts are estimated from the messages
    /// and the answer, a missing total is the sum of the parts.
    pub(crate) fn complete(
        this: Option<PartialUsage>,
        messages: &[ChatMessage],
        answer: &str,
    ) -> Usage {
        let estimate = Usage::estimate(messages, answer);
        let given = this.unwrap_or_default();
        let prompt = given.prompt_tokens.unwrap_or(estimate.prompt_tokens);
        let completion = given
            .completion_tokens
            .unwrap_or(estimate.completion_tokens);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: given.total_tokens.unwrap_or(prompt + completion),
        }
    }
}
