//! The offline deterministic responder: answers every request without a
//! network, the same way every time, so every example and test runs offline.
//!
//! What it answers, looking at the last user message (`prompt`):
//! - `json = true` and `prompt` mentions "plan" (any case): a JSON plan
//!   `{"steps":[{"id":"step-1","action":"analyze","description":"..."}, ...]}`.
//!   Its actions are analyze, build, configure, deploy, verify when `prompt`
//!   mentions "deploy", else analyze, execute, report; the descriptions quote
//!   the start of `prompt`.
//! - `json = true` otherwise: `{"answer":"mock: <first 60 chars of prompt>"}`.
//! - otherwise: `mock: <first 60 chars of prompt>`.
//!
//! Usage is the [`estimate_tokens`](super::estimate_tokens) estimate; the
//! model is the requested one.

use serde_json::json;

use super::{ChatRequest, ChatResponse, Usage};

/// How much of the prompt the answers quote, in characters.
const QUOTE_CHARS: usize = 60;

/// The mock answer to `req`, reported as coming from `model`.
pub(crate) fn answer(req: &ChatRequest, model: &str) -> ChatResponse {
    let prompt = req.last_user_text();
    let quote = quote(prompt);
    let lower = prompt.to_lowercase();
    let content = if req.json && lower.contains("plan") {
        plan(&quote, lower.contains("deploy"))
    } else if req.json {
        json!({ "answer": format!("mock: {quote}") }).to_string()
    } else {
        format!("mock: {quote}")
    };
    ChatResponse {
        usage: Usage::estimate(&req.messages, &content),
        content,
        model: model.to_string(),
        source: "mock",
    }
}

/// The first [`QUOTE_CHARS`] characters of `text`, whitespace runs folded to
/// one space so the quote fits on a line.
fn quote(text: &str) -> String {
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    folded.chars().take(QUOTE_CHARS).collect()
}

fn plan(quote: &str, deploy: bool) -> String {
    let steps: Vec<(&str, String)> = if deploy {
        vec![
            ("analyze", format!("Analyze the requirements of: {quote}")),
            ("build", "Build the artifacts the deployment needs".into()),
            ("configure", "Configure the target environment".into()),
            ("deploy", format!("Deploy: {quote}")),
            ("verify", "Verify that the deployment works".into()),
        ]
    } else {
        vec![
            ("analyze", format!("Analyze the requirements of: {quote}")),
            ("execute", format!("Carry out: {quote}")),
            ("report", "Report the results".into()),
        ]
    };
    let steps: Vec<_> = steps
        .into_iter()
        .enumerate()
        .map(|(i, (action, description))| {
            json!({ "id": format!("step-{}", i + 1), "action": action, "description": description })
        })
        .collect();
    json!({ "steps": steps }).to_string()
}
