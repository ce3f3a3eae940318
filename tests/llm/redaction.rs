//! The API key never shows: not in errors, not in Debug output, not in usage.

use orrery::llm::ApiKey;
use wiremock::MockServer;

use crate::util::*;

#[tokio::test]
async fn key_is_redacted_everywhere() {
    for (status, kind) in [(500, "http"), (401, "http"), (200, "malformed")] {
        let server = MockServer::start().await;
        chat_endpoint()
            .respond_with(EchoAuth(status))
            .mount(&server)
            .await;
        let llm = client(live_config(&server));
        let err = llm.chat(ask("x")).await.unwrap_err();
        assert_eq!(err.kind(), kind);
        assert_redacted(&err);
        // The echo did arrive, and was redacted rather than dropped.
        assert!(err.to_string().contains("Bearer ***"), "{err}");
        for text in [
            format!("{llm:?}"),
            format!("{:?}", llm.usage()),
            format!("{:?}", live_config(&server)),
        ] {
            assert!(!text.contains(KEY), "key leaked: {text}");
        }
        assert!(format!("{llm:?}").contains("ApiKey(***)"));
    }
    let key = ApiKey::new(KEY);
    assert_eq!(format!("{key}"), "ApiKey(***)");
    assert_eq!(format!("{key:?}"), "ApiKey(***)");
    let server = MockServer::start().await;
    let llm = client(live_config(&server));
    assert_eq!(
        llm.redact(&format!("token={KEY}; again {KEY}")),
        "token=***; again ***"
    );
}
