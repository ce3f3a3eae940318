//! Replay mode: answers from a JSON Lines file of recorded pairs.

use std::io::Write;

use orrery::llm::{
    ChatMessage, ChatRequest, ChatResponse, LlmClient, LlmConfig, LlmError, LlmMode, Usage,
    record_line,
};
use serde_json::json;

use crate::util::*;

fn replay_file(lines: &[String]) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".jsonl")
        .tempfile()
        .unwrap();
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
    file
}

fn replay_client(file: &tempfile::NamedTempFile) -> Result<LlmClient, LlmError> {
    LlmClient::new(LlmConfig {
        replay: Some(file.path().to_path_buf()),
        ..LlmConfig::default()
    })
}

#[tokio::test]
async fn replay_answers_recorded_requests() {
    let recorded = ChatResponse {
        content: "recorded answer".into(),
        model: "anthropic/claude-sonnet-4-0514".into(),
        usage: Usage::new(12, 3),
        source: "api",
    };
    let lines = vec![
        record_line(&ask("first question"), &recorded),
        String::new(),
        json!({"request": {"model": "special/model", "messages": [{"role": "user", "content": "q"}]},
               "response": {"content": "special"}})
        .to_string(),
        json!({"request": {"messages": [{"role": "user", "content": "q"}]}, "response": {"content": "any model"}})
            .to_string(),
    ];
    let file = replay_file(&lines);
    let llm = replay_client(&file).unwrap();
    assert_eq!(llm.mode(), LlmMode::Replay);
    assert!(llm.is_live());

    let resp = llm.chat(ask("first question")).await.unwrap();
    assert_eq!(
        resp,
        ChatResponse {
            source: "replay",
            ..recorded
        }
    );

    let q = ChatRequest::new(vec![ChatMessage::user("q")]);
    assert_eq!(llm.chat(q.clone()).await.unwrap().content, "any model");
    let special = ChatRequest {
        model: Some("special/model".into()),
        ..q
    };
    let resp = llm.chat(special).await.unwrap();
    assert_eq!(resp.content, "special");
    assert_eq!(
        resp.usage.total_tokens,
        resp.usage.prompt_tokens + resp.usage.completion_tokens
    );
    assert_eq!(llm.usage().total.calls, 3);
}

#[tokio::test]
async fn replay_miss_names_file_and_quotes_message() {
    let file = replay_file(&[record_line(
        &ask("known"),
        &ChatResponse {
            content: "x".into(),
            model: "m".into(),
            usage: Usage::new(1, 1),
            source: "api",
        },
    )]);
    let llm = replay_client(&file).unwrap();
    let question = format!("{}{}", "a".repeat(80), "TAIL-NOT-QUOTED");
    let err = llm.chat(ask(&question)).await.unwrap_err();
    assert_eq!(err.kind(), "replay");
    let text = err.to_string();
    assert!(text.contains(&file.path().display().to_string()), "{text}");
    assert!(text.contains(&"a".repeat(80)), "{text}");
    assert!(!text.contains("TAIL-NOT-QUOTED"), "{text}");
    assert!(text.contains("no recorded answer"), "{text}");
}

#[tokio::test]
async fn replay_bad_line_names_file_and_line() {
    let good = json!({"request": {"messages": []}, "response": {"content": "x"}}).to_string();
    let file = replay_file(&[
        good.clone(),
        good,
        r#"{"request": {"messages": []}}"#.to_string(),
    ]);
    let err = replay_client(&file).unwrap_err();
    assert_eq!(err.kind(), "replay");
    let text = err.to_string();
    let at = format!("{}:3:", file.path().display());
    assert!(text.contains(&at), "{at:?} not in {text}");
    assert!(text.contains("response"), "says what is missing: {text}");

    let missing = LlmClient::new(LlmConfig {
        replay: Some("/no/such/replay.jsonl".into()),
        ..LlmConfig::default()
    })
    .unwrap_err();
    assert!(
        missing.to_string().contains("/no/such/replay.jsonl"),
        "{missing}"
    );
}
