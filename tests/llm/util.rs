//! Helpers shared by the LLM tests: a live config pointing at a wiremock
//! server, request and completion builders, and custom responders.

use orrery::llm::{ApiKey, ChatMessage, ChatRequest, LlmClient, LlmConfig, LlmError};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// A distinctive key, so any leak is unmistakable.
pub const KEY: &str = "sk-orrery-TEST-7f3a9c1e5b2d-SECRET";

pub fn live_config(server: &MockServer) -> LlmConfig {
    LlmConfig {
        url: Some(format!("{}/v1", server.uri())),
        api_key: Some(ApiKey::new(KEY)),
        timeout_ms: 10_000,
        max_retries: 2,
        backoff_base_ms: 1,
        ..LlmConfig::default()
    }
}

pub fn client(cfg: LlmConfig) -> LlmClient {
    LlmClient::new(cfg).expect("client builds")
}

pub fn ask(text: &str) -> ChatRequest {
    ChatRequest::new(vec![
        ChatMessage::system("You are a test."),
        ChatMessage::user(text),
    ])
}

pub fn completion(content: &str, model: &str, prompt: u64, completion: u64) -> Value {
    json!({
        "id": "cmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    })
}

pub fn chat_endpoint() -> wiremock::MockBuilder {
    Mock::given(method("POST")).and(path("/v1/chat/completions"))
}

/// Asserts that no rendering of `err` shows the key.
pub fn assert_redacted(err: &LlmError) {
    for text in [err.to_string(), format!("{err:?}"), format!("{err:#?}")] {
        assert!(!text.contains(KEY), "key leaked: {text}");
        assert!(
            !text.contains("7f3a9c1e5b2d"),
            "part of the key leaked: {text}"
        );
    }
}

/// Answers with a template and reports each arrival on a channel, so tests
/// can wait for "the request reached the server" instead of sleeping.
pub struct Arrivals {
    pub tx: tokio::sync::mpsc::UnboundedSender<()>,
    pub template: ResponseTemplate,
}

impl Respond for Arrivals {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        let _ = self.tx.send(());
        self.template.clone()
    }
}

/// Echoes the request's Authorization header back in the body.
pub struct EchoAuth(pub u16);

impl Respond for EchoAuth {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let auth = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("<none>");
        ResponseTemplate::new(self.0).set_body_string(format!("denied: you sent {{{auth}}}"))
    }
}
