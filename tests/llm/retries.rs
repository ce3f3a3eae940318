//! Live mode: which failures are retried, how often, and what is reported
//! when the retries run out.

use std::time::{Duration, Instant};

use orrery::llm::{ApiKey, LlmConfig, LlmError};
use serde_json::json;
use wiremock::{MockServer, ResponseTemplate};

use crate::util::*;

#[tokio::test]
async fn rate_limited_then_success_honours_retry_after() {
    let server = MockServer::start().await;
    chat_endpoint()
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    chat_endpoint()
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("after wait", "m", 1, 1)))
        .expect(1)
        .mount(&server)
        .await;
    let started = Instant::now();
    let resp = client(live_config(&server))
        .chat(ask("busy?"))
        .await
        .unwrap();
    assert_eq!(resp.content, "after wait");
    // backoff_base_ms is 1: only Retry-After can account for a 1 s wait.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    server.verify().await;
}

#[tokio::test]
async fn retry_after_http_date_in_the_past_retries_at_once() {
    let server = MockServer::start().await;
    chat_endpoint()
        .respond_with(
            ResponseTemplate::new(503)
                .insert_header("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    chat_endpoint()
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("ok", "m", 1, 1)))
        .mount(&server)
        .await;
    assert_eq!(
        client(live_config(&server))
            .chat(ask("x"))
            .await
            .unwrap()
            .content,
        "ok"
    );
}

#[tokio::test]
async fn rate_limited_exhausted() {
    let server = MockServer::start().await;
    chat_endpoint()
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0"))
        .expect(3)
        .mount(&server)
        .await;
    let llm = client(live_config(&server));
    let err = llm.chat(ask("x")).await.unwrap_err();
    assert_eq!(err.kind(), "rate_limited");
    assert!(
        matches!(
            err,
            LlmError::RateLimited {
                attempts: 3,
                retry_after_ms: Some(0),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("429"), "{err}");
    assert_eq!(llm.usage().failed_calls, 1);
    server.verify().await;
}

#[tokio::test]
async fn server_error_exhausted_is_http_after_all_attempts() {
    let server = MockServer::start().await;
    let cfg = LlmConfig {
        max_retries: 3,
        ..live_config(&server)
    };
    chat_endpoint()
        .respond_with(ResponseTemplate::new(500).set_body_string("upstream exploded"))
        .expect(4) // max_retries + 1
        .mount(&server)
        .await;
    let err = client(cfg).chat(ask("x")).await.unwrap_err();
    assert_eq!(err.kind(), "http");
    assert!(
        matches!(
            err,
            LlmError::Http {
                status: Some(500),
                attempts: 4,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("HTTP 500") && text.contains("upstream exploded"),
        "{text}"
    );
    assert!(
        text.contains("/v1/chat/completions"),
        "names the endpoint: {text}"
    );
    server.verify().await;
}

#[tokio::test]
async fn client_error_is_not_retried() {
    let server = MockServer::start().await;
    chat_endpoint()
        .respond_with(
            ResponseTemplate::new(400).set_body_json(json!({"error": {"message": "bad model"}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let err = client(live_config(&server))
        .chat(ask("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::Http {
                status: Some(400),
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("bad model"), "{err}");
    server.verify().await;
}

#[tokio::test]
async fn unreachable_endpoint_is_retried_then_http_without_status() {
    // Connections to it are refused, and no other test can take it meanwhile.
    let port = closed_port();
    let cfg = LlmConfig {
        url: Some(format!("http://127.0.0.1:{port}/v1")),
        api_key: Some(ApiKey::new(KEY)),
        max_retries: 2,
        backoff_base_ms: 1,
        ..LlmConfig::default()
    };
    let err = client(cfg).chat(ask("x")).await.unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::Http {
                status: None,
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("could not reach"), "{err}");
    assert_redacted(&err);
}
