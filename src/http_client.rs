//! The one place HTTP clients are built (the LLM client, the `http` capability,
//! the trace exporter), and their failures put in words.
//!
//! reqwest is built with `rustls-no-provider`: its default crypto provider,
//! aws-lc-rs, is a large C build, while `ring` builds in seconds. reqwest
//! takes whatever provider is installed when a client is built, and panics
//! when there is none, so every client starts from [`builder`].

/// A reqwest client builder, with rustls's `ring` backend installed as the
/// process-wide crypto provider unless the program installed one already.
pub fn builder() -> reqwest::ClientBuilder {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race against another thread installing one is fine: some
        // provider is then installed, which is all reqwest needs.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
}

/// What a failed request went wrong with, in words: reqwest's own message
/// only says "error sending request for url (...)", repeating the URL, and
/// the cause ("Connection refused", "dns error") is further down the
/// chain, so this is the chain (or the message itself when there is none).
pub fn failure_text(e: &reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    }
}
