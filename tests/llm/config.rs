//! LlmConfig defaults and the environment overlay.

use std::collections::HashMap;

use orrery::llm::{ApiKey, LlmConfig};

#[test]
fn config_defaults_and_environment() {
    let d = LlmConfig::default();
    assert_eq!(
        (d.url.as_deref(), d.model.as_str()),
        (None, "anthropic/claude-sonnet-4")
    );
    assert_eq!(
        (
            d.timeout_ms,
            d.max_retries,
            d.backoff_base_ms,
            d.max_concurrent
        ),
        (60_000, 3, 500, 4)
    );
    assert!(!d.mock && d.replay.is_none() && d.token_budget.is_none() && d.api_key.is_none());

    let vars = HashMap::from([
        ("ORRERY_LLM_URL", "http://127.0.0.1:11434/v1"),
        ("ORRERY_LLM_MODEL", "llama3"),
        ("ORRERY_LLM_KEY", ""),
        ("OPENAI_API_KEY", " openai-key \n"),
        ("OPENROUTER_API_KEY", "router-key"),
        ("ORRERY_LLM_TIMEOUT_MS", "1500"),
        ("ORRERY_LLM_MOCK", "yes"),
        ("ORRERY_LLM_TOKEN_BUDGET", "5000"),
    ]);
    let lookup = |name: &str| vars.get(name).map(|v| v.to_string());
    let cfg = LlmConfig::from_vars_and(LlmConfig::default(), lookup).unwrap();
    assert_eq!(cfg.url.as_deref(), Some("http://127.0.0.1:11434/v1"));
    assert_eq!(cfg.model, "llama3");
    assert_eq!(
        cfg.api_key,
        Some(ApiKey::new("openai-key")),
        "empty ORRERY_LLM_KEY is skipped"
    );
    assert_eq!(
        (cfg.timeout_ms, cfg.mock, cfg.token_budget),
        (1500, true, Some(5000))
    );
    assert_eq!(cfg.max_retries, 3, "unset variables keep the base value");

    let bad = LlmConfig::from_vars_and(LlmConfig::default(), |name| {
        (name == "ORRERY_LLM_MAX_RETRIES").then(|| "lots".to_string())
    })
    .unwrap_err();
    assert_eq!(bad.kind(), "config");
    assert!(bad.to_string().contains("ORRERY_LLM_MAX_RETRIES"), "{bad}");
    assert_eq!(LlmConfig::api_key_from_vars(|_| None), None);
}
