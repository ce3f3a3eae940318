//! `https://` endpoints: the build has TLS (rustls with the `ring` provider),
//! so an https URL is attempted rather than refused as unsupported.

use orrery::llm::{LlmConfig, LlmError};
use wiremock::{MockServer, ResponseTemplate};

use crate::util::*;

#[tokio::test]
async fn https_to_a_closed_port_is_a_connection_error() {
    let port = closed_port();
    let cfg = LlmConfig {
        url: Some(format!("https://127.0.0.1:{port}/v1")),
        max_retries: 0,
        ..LlmConfig::default()
    };
    let err = client(cfg).chat(ask("x")).await.unwrap_err();
    assert_eq!(err.kind(), "http", "{err}");
    assert!(
        matches!(err, LlmError::Http { status: None, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("https://127.0.0.1"), "{err}");
}

#[tokio::test]
async fn https_to_a_plain_http_server_fails_in_the_tls_handshake() {
    // wiremock speaks plain HTTP: a TLS client gets an HTTP answer to its
    // ClientHello, which proves that a handshake was really attempted.
    let server = MockServer::start().await;
    chat_endpoint()
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("x", "m", 1, 1)))
        .mount(&server)
        .await;
    let cfg = LlmConfig {
        url: Some(format!(
            "{}/v1",
            server.uri().replacen("http://", "https://", 1)
        )),
        max_retries: 0,
        ..live_config(&server)
    };
    let err = client(cfg).chat(ask("x")).await.unwrap_err();
    assert_eq!(err.kind(), "http", "{err}");
    let text = err.to_string();
    assert!(
        text.to_lowercase().contains("tls") || text.contains("InvalidContentType"),
        "the error names the TLS failure: {text}"
    );
    assert_redacted(&err);
}
