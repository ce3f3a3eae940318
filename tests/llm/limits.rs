//! The token budget and the concurrency limit.

use std::time::{Duration, Instant};

use orrery::llm::{ChatRequest, LlmConfig, LlmError};
use wiremock::{MockServer, ResponseTemplate};

use crate::util::*;

#[tokio::test]
async fn budget_exhausted_sends_nothing() {
    let server = MockServer::start().await;
    chat_endpoint()
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("ok", "m", 6, 4)))
        .expect(1)
        .mount(&server)
        .await;
    let llm = client(LlmConfig {
        token_budget: Some(10),
        ..live_config(&server)
    });
    llm.chat(ask("one")).await.unwrap();
    let err = llm.chat(ask("two")).await.unwrap_err();
    assert_eq!(err.kind(), "budget");
    assert!(
        matches!(
            err,
            LlmError::BudgetExhausted {
                used: 10,
                budget: 10
            }
        ),
        "{err:?}"
    );
    server.verify().await;

    // Another task's handle has its own budget and totals.
    let sibling = llm.for_task(Some(0));
    assert_eq!(
        sibling.chat(ask("three")).await.unwrap_err().kind(),
        "budget"
    );
    assert_eq!(sibling.usage().total.calls, 0);
    assert_eq!(llm.usage().total.calls, 1);
}

#[tokio::test]
async fn budget_counts_mock_answers_too() {
    let llm = client(LlmConfig {
        token_budget: Some(1),
        ..LlmConfig::default()
    });
    llm.chat(ask("anything")).await.unwrap();
    assert_eq!(llm.chat(ask("more")).await.unwrap_err().kind(), "budget");
}

#[tokio::test]
async fn concurrency_limit_queues_calls() {
    let server = MockServer::start().await;
    let (tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let template = ResponseTemplate::new(200)
        .set_body_json(completion("slow", "m", 1, 1))
        .set_delay(Duration::from_millis(800));
    chat_endpoint()
        .respond_with(Arrivals { tx, template })
        .mount(&server)
        .await;
    let llm = client(LlmConfig {
        max_concurrent: 1,
        ..live_config(&server)
    });

    let first = tokio::spawn({
        let llm = llm.clone();
        async move { llm.chat(ask("first")).await }
    });
    arrived
        .recv()
        .await
        .expect("the first call reaches the server");
    // The only slot is taken: a second call (even from another task's handle,
    // which shares the endpoint) must wait, and here times out waiting.
    let queued = ChatRequest {
        timeout_ms: Some(100),
        ..ask("second")
    };
    let err = llm.for_task(None).chat(queued).await.unwrap_err();
    assert!(
        matches!(err, LlmError::Timeout { attempts: 0, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("free concurrent-call slot"),
        "{err}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    first.await.unwrap().unwrap();

    // Once the slot is free, queued calls go through one after the other.
    let started = Instant::now();
    let (a, b) = tokio::join!(llm.chat(ask("a")), llm.chat(ask("b")));
    a.unwrap();
    b.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1600),
        "{:?}",
        started.elapsed()
    );
}
