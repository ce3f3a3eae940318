//! Live mode: answers, the request on the wire, usage accounting, timeouts
//! and malformed bodies.

use std::time::{Duration, Instant};

use orrery::llm::{ChatMessage, ChatRequest, LlmConfig, LlmError, LlmMode, Usage};
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header};
use wiremock::{MockServer, ResponseTemplate};

use crate::util::*;

#[tokio::test]
async fn live_answer_and_usage_totals_per_model() {
    let server = MockServer::start().await;
    chat_endpoint()
        .and(body_partial_json(
            json!({"model": "anthropic/claude-sonnet-4"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            "hello",
            "anthropic/claude-sonnet-4-0514",
            10,
            5,
        )))
        .expect(2)
        .mount(&server)
        .await;
    chat_endpoint()
        .and(body_partial_json(json!({"model": "other/model"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            "hi",
            "other/model",
            7,
            3,
        )))
        .expect(1)
        .mount(&server)
        .await;
    let llm = client(live_config(&server));
    assert_eq!(llm.mode(), LlmMode::Live);
    assert!(llm.is_live());

    let resp = llm.chat(ask("say hello")).await.unwrap();
    assert_eq!(resp.content, "hello");
    assert_eq!(resp.source, "api");
    assert_eq!(resp.model, "anthropic/claude-sonnet-4-0514");
    assert_eq!(resp.usage, Usage::new(10, 5));
    llm.chat(ask("again")).await.unwrap();
    let other = ChatRequest {
        model: Some("other/model".into()),
        ..ask("other")
    };
    assert_eq!(llm.chat(other).await.unwrap().usage.total_tokens, 10);

    let usage = llm.usage();
    assert_eq!(usage.total.calls, 3);
    assert_eq!(usage.total.total_tokens, 40);
    assert_eq!(usage.failed_calls, 0);
    let sonnet = usage.per_model["anthropic/claude-sonnet-4"];
    assert_eq!(
        (
            sonnet.calls,
            sonnet.prompt_tokens,
            sonnet.completion_tokens,
            sonnet.total_tokens
        ),
        (2, 20, 10, 30)
    );
    let other = usage.per_model["other/model"];
    assert_eq!((other.calls, other.total_tokens), (1, 10));
}

#[tokio::test]
async fn request_body_and_bearer_header() {
    let server = MockServer::start().await;
    let req = ChatRequest {
        model: Some("m/1".into()),
        temperature: Some(0.25),
        max_tokens: Some(77),
        json: true,
        ..ask("shape")
    };
    chat_endpoint()
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .and(header("content-type", "application/json"))
        .and(body_partial_json(json!({
            "model": "m/1",
            "messages": [{"role": "system", "content": "You are a test."}, {"role": "user", "content": "shape"}],
            "temperature": 0.25,
            "max_tokens": 77,
            "response_format": {"type": "json_object"}
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("{}", "m/1", 1, 1)))
        .expect(1)
        .mount(&server)
        .await;
    client(live_config(&server)).chat(req).await.unwrap();
    server.verify().await;
}

#[tokio::test]
async fn unset_options_are_not_sent_and_no_key_means_no_header() {
    let server = MockServer::start().await;
    chat_endpoint()
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("ok", "m", 1, 1)))
        .mount(&server)
        .await;
    let cfg = LlmConfig {
        api_key: None,
        ..live_config(&server)
    };
    let llm = client(cfg);
    assert_eq!(llm.mode(), LlmMode::Live, "a url without a key is live");
    llm.chat(ask("plain")).await.unwrap();
    let received = server.received_requests().await.unwrap();
    let body: Value = received[0].body_json().unwrap();
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["messages", "model"]);
    assert!(received[0].headers.get("authorization").is_none());
}

#[tokio::test]
async fn missing_usage_is_estimated() {
    let server = MockServer::start().await;
    let body = json!({"choices": [{"message": {"role": "assistant", "content": "abcdefgh"}}]});
    chat_endpoint()
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;
    let llm = client(live_config(&server));
    let req = ChatRequest::new(vec![ChatMessage::user("0123456789abcdef")]);
    let resp = llm.chat(req).await.unwrap();
    assert_eq!(resp.usage, Usage::new(4, 2));
    assert_eq!(
        resp.model, "anthropic/claude-sonnet-4",
        "falls back to the requested model"
    );
}

/// A server that answers a completion after 3 s.
async fn slow_server() -> MockServer {
    let server = MockServer::start().await;
    chat_endpoint()
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("late", "m", 1, 1))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn slow_endpoint_times_out() {
    let server = slow_server().await;
    let cfg = LlmConfig {
        timeout_ms: 150,
        ..live_config(&server)
    };
    let started = Instant::now();
    let err = client(cfg).chat(ask("x")).await.unwrap_err();
    assert_eq!(err.kind(), "timeout");
    assert!(
        matches!(
            err,
            LlmError::Timeout {
                timeout_ms: 150,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn request_timeout_overrides_config() {
    let server = slow_server().await;
    let req = ChatRequest {
        timeout_ms: Some(100),
        ..ask("x")
    };
    let err = client(live_config(&server)).chat(req).await.unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::Timeout {
                timeout_ms: 100,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn malformed_answers() {
    let cases = [
        (
            ResponseTemplate::new(200).set_body_string("<html>gateway</html>"),
            "not JSON",
        ),
        (
            ResponseTemplate::new(200).set_body_json(json!({"choices": []})),
            "no choices",
        ),
        (
            ResponseTemplate::new(200).set_body_json(json!({"data": 1})),
            "not a chat completion",
        ),
        (
            ResponseTemplate::new(200)
                .set_body_json(json!({"choices": [{"message": {"content": null}}]})),
            "content is missing",
        ),
        (
            ResponseTemplate::new(200)
                .set_body_json(json!({"error": {"message": "provider down", "code": 502}})),
            "provider down",
        ),
    ];
    for (template, expected) in cases {
        let server = MockServer::start().await;
        chat_endpoint()
            .respond_with(template)
            .expect(1)
            .mount(&server)
            .await;
        let err = client(live_config(&server))
            .chat(ask("x"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "malformed", "{err:?}");
        assert!(
            err.to_string().contains(expected),
            "{expected:?} not in {err}"
        );
    }
}
