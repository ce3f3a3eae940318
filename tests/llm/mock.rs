//! The offline mock responder and how a client picks its mode.

use orrery::llm::{ApiKey, ChatRequest, ChatResponse, LlmClient, LlmConfig, LlmMode};
use serde_json::{Value, json};
use wiremock::MockServer;

use crate::util::*;

#[tokio::test]
async fn mock_is_default_deterministic_and_plain() {
    let llm = client(LlmConfig::default());
    assert_eq!(llm.mode(), LlmMode::Mock);
    assert!(!llm.is_live());
    let long = "Summarise the quarterly numbers for the board, highlighting risks and the outlook";
    let a = llm.chat(ask(long)).await.unwrap();
    let b = llm.chat(ask(long)).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(a.source, "mock");
    assert_eq!(a.content, format!("mock: {}", &long[..60]));
    assert_eq!(a.model, "anthropic/claude-sonnet-4");
    assert!(
        a.usage.prompt_tokens >= 1
            && a.usage.total_tokens == a.usage.prompt_tokens + a.usage.completion_tokens
    );
    assert_eq!(llm.usage().total.calls, 2);

    let json_req = ChatRequest {
        json: true,
        ..ask("What is 2+2?")
    };
    let answer: Value = serde_json::from_str(&llm.chat(json_req).await.unwrap().content).unwrap();
    assert_eq!(answer, json!({"answer": "mock: What is 2+2?"}));
}

#[tokio::test]
async fn mock_plans_follow_the_prompt() {
    let llm = client(LlmConfig {
        mock: true,
        ..LlmConfig::default()
    });
    let steps = |resp: ChatResponse| -> Vec<(String, String)> {
        let plan: Value = serde_json::from_str(&resp.content).expect("the plan is JSON");
        plan["steps"]
            .as_array()
            .expect("steps is an array")
            .iter()
            .map(|s| {
                assert!(s["description"].as_str().is_some_and(|d| !d.is_empty()));
                (
                    s["id"].as_str().unwrap().to_string(),
                    s["action"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let deploy = ChatRequest {
        json: true,
        ..ask("Make a PLAN to deploy the web service")
    };
    let got = steps(llm.chat(deploy.clone()).await.unwrap());
    let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    let actions: Vec<&str> = got.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(ids, ["step-1", "step-2", "step-3", "step-4", "step-5"]);
    assert_eq!(
        actions,
        ["analyze", "build", "configure", "deploy", "verify"]
    );
    assert_eq!(
        llm.chat(deploy.clone()).await.unwrap(),
        llm.chat(deploy).await.unwrap()
    );

    let other = ChatRequest {
        json: true,
        ..ask("Plan the data migration")
    };
    let actions: Vec<String> = steps(llm.chat(other).await.unwrap())
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    assert_eq!(actions, ["analyze", "execute", "report"]);

    // Without json the same prompt gets text, not a plan.
    let text = llm.chat(ask("Plan the data migration")).await.unwrap();
    assert_eq!(text.content, "mock: Plan the data migration");
}

#[tokio::test]
async fn mode_selection() {
    let server = MockServer::start().await;
    let forced = LlmConfig {
        mock: true,
        ..live_config(&server)
    };
    assert_eq!(client(forced).mode(), LlmMode::Mock);
    let key_only = LlmConfig {
        api_key: Some(ApiKey::new(KEY)),
        ..LlmConfig::default()
    };
    assert_eq!(
        client(key_only).mode(),
        LlmMode::Mock,
        "a key without a url stays offline"
    );
    let bad_url = LlmConfig {
        url: Some("not a url".into()),
        ..LlmConfig::default()
    };
    assert_eq!(LlmClient::new(bad_url).unwrap_err().kind(), "config");
    let zero = LlmConfig {
        max_concurrent: 0,
        ..live_config(&server)
    };
    assert_eq!(LlmClient::new(zero).unwrap_err().kind(), "config");
    let empty = client(LlmConfig::default())
        .chat(ChatRequest::default())
        .await
        .unwrap_err();
    assert_eq!(empty.kind(), "config");
}
