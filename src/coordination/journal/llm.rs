//! One LLM call as the journal and the trace see it: started before the
//! call (a span named `chat {model}` and a clock), finished with its result
//! (tokens, latency, error kind; prompt and answer only when prompts are
//! journaled).

use std::time::Instant;

use tracing::Span;

use super::{Event, Journal};
use crate::llm::{ChatMessage, ChatRequest, ChatResponse, LlmError};

/// An LLM call in flight (see [`Journal::llm_call`]).
pub struct LlmCall {
    span: Span,
    started: Instant,
    model: String,
    prompt: Option<Vec<ChatMessage>>,
}

impl Journal {
    /// Starts observing a call of `req` to `model`: await the call inside
    /// [`LlmCall::span`], then give its result to [`LlmCall::finish`].
    pub fn llm_call(&self, model: &str, req: &ChatRequest) -> LlmCall {
        LlmCall {
            span: crate::trace::llm_chat(model),
            started: Instant::now(),
            model: model.to_string(),
            prompt: (self.is_on() && self.prompts()).then(|| req.messages.clone()),
        }
    }
}

impl LlmCall {
    /// The call's span (`chat {model}`).
    pub fn span(&self) -> Span {
        self.span.clone()
    }

    /// Records the result on the span and in `journal`, as the current agent's.
    pub fn finish(self, journal: &Journal, result: &Result<ChatResponse, LlmError>) {
        let latency_ms = self.started.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(r) => crate::trace::llm_answered(
                &self.span,
                &r.model,
                r.source,
                r.usage.prompt_tokens,
                r.usage.completion_tokens,
            ),
            Err(e) => crate::trace::llm_failed(&self.span, e.kind()),
        }
        let answered = result.as_ref().ok();
        journal.record(|| Event::LlmCall {
            model: self.model,
            source: answered.map(|r| r.source.to_string()),
            latency_ms,
            input_tokens: answered.map_or(0, |r| r.usage.prompt_tokens),
            output_tokens: answered.map_or(0, |r| r.usage.completion_tokens),
            error_kind: result.as_ref().err().map(|e| e.kind().to_string()),
            answer: self
                .prompt
                .is_some()
                .then(|| answered.map(|r| r.content.clone()))
                .flatten(),
            prompt: self.prompt,
        });
    }
}
